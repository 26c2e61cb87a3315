"""Data: the lectures' split, the vectorised examples, and what the loader accepts or refuses."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from makemore.data import (
    BUILTIN_NAMES,
    build_examples,
    build_vocab,
    load_dataset,
    make_dataset,
    read_items,
    split_items,
    utf16,
)
from makemore.errors import MakemoreError


def lecture_examples(words, vocab, block_size):
    """The lectures' build_dataset loop, as the reference for the vectorised version."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ix in vocab.encode(w) + [0]:
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X).view(-1, block_size), torch.tensor(Y)


def test_standard_split_counts():
    ds = load_dataset(None, 3)
    assert {s: len(ds.Y[s]) for s in ds.Y} == {"train": 182_625, "dev": 22_655, "test": 22_866}
    assert ds.vocab.size == 27 and ds.vocab.chars[0] == "."
    assert sum(len(w) for w in ds.words.values()) == 32_033


@pytest.mark.parametrize("block_size", [1, 2, 3, 8])
def test_examples_match_the_lecture_loop(block_size):
    ds = load_dataset(None, block_size)
    X, Y = lecture_examples(ds.words["dev"], ds.vocab, block_size)
    assert torch.equal(ds.X["dev"], X) and torch.equal(ds.Y["dev"], Y)
    assert ds.X["dev"].dtype == torch.int64 and ds.X["dev"].shape == (len(Y), block_size)


def test_any_characters_are_tokens(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes("\ufeffzoë\r\nan na\n\n   \nx-y!\n".encode())
    items = read_items(path)
    assert items == ["zoë", "an na", "x-y!"]
    vocab = build_vocab(items)
    assert vocab.chars == (".", " ", "!", "-", "a", "n", "o", "x", "y", "z", "ë")
    X, Y = build_examples(items, vocab, 2)
    assert vocab.decode(Y[:4].tolist()) == "zoë."


def test_boundary_clash_is_refused_with_a_fix():
    with pytest.raises(MakemoreError, match=r"'data.boundary=\|'"):
        build_vocab(["a.b", "cd"])
    assert build_vocab(["a.b"], boundary="|").chars == ("|", ".", "a", "b")


@pytest.mark.parametrize("boundary", ["", "||", "\n", "\r"])
def test_a_boundary_must_be_one_character_other_than_a_line_end(boundary):
    with pytest.raises(MakemoreError) as refused:
        build_vocab(["ab"], boundary=boundary)
    assert str(refused.value) == f"data.boundary must be one character other than a line end, got {boundary!r}"
    assert build_vocab(["ab"], boundary="X").chars == ("X", "a", "b")  # any other one character will do


FIX = "pass data.path=<a UTF-8 text file with one item per line>"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "data file not found: {path}; " + FIX),
        (b"", "data file {path} has no items (it is empty or blank); " + FIX),
        (b"\n \n\r\n", "data file {path} has no items (it is empty or blank); " + FIX),
        (b"ab\xff\xfe", "data file {path} is not valid UTF-8 (bad byte at offset 2); re-save it as UTF-8"),
        (b"\x00\x01\x02", "data file {path} looks binary (it contains NUL bytes); " + FIX),
    ],
)
def test_unreadable_files_are_refused_with_the_problem_and_the_fix(tmp_path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MakemoreError) as refused:
        read_items(path)
    assert str(refused.value) == message.format(path=path)


def test_a_context_longer_than_all_the_data_is_padded_with_boundaries():
    vocab = build_vocab(["ab"])
    X, Y = build_examples(["ab"], vocab, 5)
    assert X.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 2]] and Y.tolist() == [1, 2, 0]


def test_make_dataset_splits_as_the_lectures_by_default_and_refuses_a_context_of_no_characters():
    items = ["a" * i + "b" for i in range(1, 31)]
    assert make_dataset(items, build_vocab(items), 1).words == split_items(items, (0.8, 0.1, 0.1), 42)
    with pytest.raises(MakemoreError) as refused:
        make_dataset(items, build_vocab(items), 0)
    assert str(refused.value) == "model.block_size must be at least 1, got 0"


def test_a_path_that_cannot_be_read_is_refused_with_the_problem_and_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "names.txt"
    path.write_text("emma\n")

    def unreadable(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "read_bytes", unreadable)
    with pytest.raises(MakemoreError) as refused:  # as root, chmod cannot make a file unreadable: the read fails here
        read_items(path)
    assert str(refused.value) == f"cannot read data file {path} (Permission denied); check its permissions, or {FIX}"
    with pytest.raises(MakemoreError) as refused:
        read_items(tmp_path)
    assert str(refused.value) == f"data path is not a file: {tmp_path}; {FIX}"


def test_split_is_configurable_and_checked(tiny_corpus):
    ds = load_dataset(str(tiny_corpus), 2, fractions=(0.5, 0.3, 0.2), seed=1)
    assert [len(ds.words[s]) for s in ("train", "dev", "test")] == [30, 18, 12]  # of 60 items
    for fractions in [(0.5, 0.5, 0.5), (0.5, 0.5), (0.9, 0.1, 0.0), (1.1, -0.05, -0.05)]:
        with pytest.raises(MakemoreError, match=r"^data.fractions must be three positive numbers summing to 1, got "):
            load_dataset(str(tiny_corpus), 2, fractions=fractions)
    with pytest.raises(MakemoreError) as few:
        load_dataset(str(tiny_corpus), 2, fractions=(0.99, 0.005, 0.005))
    assert str(few.value) == (
        "60 items are too few to split [0.99, 0.005, 0.005] (got {'train': 59, 'dev': 0, 'test': 1}); add data"
    )


def test_builtin_data_is_the_lecture_file():
    assert BUILTIN_NAMES.stat().st_size == 228_145


# Any text but NUL and the line ends (which separate items), and no byte-order mark at the start.
item_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r\n\ufeff"), min_size=1)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(item_text, min_size=1, max_size=30), crlf=st.booleans())
def test_every_non_blank_line_of_a_utf8_file_survives(tmp_path_factory, items, crlf):
    """Nothing valid is dropped or refused: accents, CJK, emoji, combining marks, spaces all stay, in order."""
    path = tmp_path_factory.mktemp("data") / "items.txt"
    path.write_bytes(("\r\n" if crlf else "\n").join(items).encode("utf-8"))
    kept = [item for item in items if item.strip()]
    if kept:
        assert read_items(path) == kept
    else:
        with pytest.raises(MakemoreError, match="has no items"):
            read_items(path)


def test_non_ascii_names_are_read_as_written(tmp_path):
    names = ["zoë", "josé", "łucja", "明", "👩‍🔬", "e\u0301mile"]
    path = tmp_path / "names.txt"
    path.write_text("\n".join(names), encoding="utf-8")
    assert read_items(path) == names


def test_load_dataset_passes_on_its_boundary_and_seed(tiny_corpus):
    items = read_items(tiny_corpus)
    dataset = load_dataset(str(tiny_corpus), 2, boundary="|", seed=7)
    assert dataset.vocab.chars == ("|", "a", "b", "c") and dataset.block_size == 2
    assert dataset.words == split_items(items, (0.8, 0.1, 0.1), 7) != split_items(items, (0.8, 0.1, 0.1), 42)


@pytest.mark.parametrize(
    "raw, is_utf16",
    [
        (b"\xfe\xff" + "Ā\n".encode("utf-16-be"), True),  # the big-endian mark; U+0100's 01 00 defeats the NUL rule
        (b"\xff\xfe" + "Ā\n".encode("utf-16-le"), True),  # the little-endian mark
        ("a\n".encode("utf-16-le"), True),  # four bytes, every other one NUL: the shortest unmarked UTF-16 it tells
        ("a\n".encode("utf-16-be"), True),
        (b"a\x00\n", False),  # three bytes: too short to tell
        (b"\x00" * 8, False),  # NULs only: binary, not text
        (b"anna\nbob\n", False),
    ],
)
def test_utf16_is_told_by_its_mark_or_by_every_other_byte_being_nul(raw, is_utf16):
    assert utf16(raw) == is_utf16


def test_cr_only_line_ends_split_items(tmp_path):
    path = tmp_path / "mac.txt"
    path.write_bytes(b"anna\rbob\r\rcarl\r\ndave\n")
    assert read_items(path) == ["anna", "bob", "carl", "dave"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_files_are_named_as_such(tmp_path, encoding):
    path = tmp_path / "names.txt"
    path.write_bytes("emma\nolivia\nava\n".encode(encoding))
    with pytest.raises(MakemoreError, match="is UTF-16; re-save it as UTF-8"):
        load_dataset(str(path), 3)


def test_an_emoji_sequence_is_one_token_and_samples_never_hold_a_stray_modifier(tmp_path):
    from makemore.data import tokens_of
    from makemore.models import MLP
    from makemore.sample import generate

    items = ["ana👍🏽", "bo👍🏿b", "👨‍👩‍👧x", "🇫🇷y", "cafe\u0301", "zoe👍"] * 5
    assert tokens_of("bo👍🏿b") == ["b", "o", "👍🏿", "b"] and tokens_of("🇫🇷y") == ["🇫🇷", "y"]
    assert tokens_of("cafe\u0301") == ["c", "a", "f", "e", "\u0301"]  # a combining accent stays a token
    vocab = build_vocab(items)
    assert {"👍🏽", "👍🏿", "👍", "👨‍👩‍👧", "🇫🇷"} <= set(vocab.chars) and "🏽" not in vocab.chars
    data = make_dataset(items, vocab, 3)
    X, Y = build_examples(["bo👍🏿b", "🇫🇷y"], vocab, 2)
    assert [vocab.decode([t]) for t in Y.tolist()] == ["b", "o", "👍🏿", "b", ".", "🇫🇷", "y", "."]
    assert [vocab.decode(row) for row in X.tolist()] == ["..", ".b", "bo", "o👍🏿", "👍🏿b", "..", ".🇫🇷", "🇫🇷y"]
    assert len(data.Y["train"]) == sum(len(tokens_of(item)) + 1 for item in data.words["train"])
    assert vocab.decode(vocab.encode("ana👍🏽")) == "ana👍🏽" and len(vocab.encode("ana👍🏽")) == 4
    torch.manual_seed(0)
    samples = generate(MLP(vocab.size, 3, emb=4, hidden=8), vocab, 3, 200, seed=1)
    modifiers = {chr(c) for c in range(0x1F3FB, 0x1F400)}
    assert all(not (set(token) & modifiers) or len(token) > 1 for sample in samples for token in tokens_of(sample))


def test_plain_characters_take_the_vectorised_path(monkeypatch):
    from makemore import data

    def no_tokenising(item):
        raise AssertionError("plain characters need no tokenising")

    names = ["emma", "olivia", "ava", "isabella"] * 3
    vocab = build_vocab(names)
    monkeypatch.setattr(data, "tokens_of", no_tokenising)
    X, Y = build_examples(names, vocab, 3)  # without tokens_of: one vectorised pass over the code points
    assert len(Y) == sum(len(name) + 1 for name in names)
    monkeypatch.undo()
    assert data.tokens_of("emma") == ["e", "m", "m", "a"]
    monkeypatch.setattr(data, "TOKEN", None)  # text with no emoji never reaches the sequence pattern
    assert data.tokens_of("olivia") == list("olivia")
