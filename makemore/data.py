"""Data: read a one-item-per-line file, build the vocabulary, split by words, cut (context, next) examples."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from makemore.config import BUILTIN_PATHS
from makemore.errors import MakemoreError
from makemore.shell import override

BUILTIN_NAMES = Path(__file__).parent / "data" / "names.txt"
SPLITS = ("train", "dev", "test")
# Boundary tokens to suggest when the data holds the chosen one: plain ones first, then the control pictures.
BOUNDARY_CHOICES = "|@%_+:/#~^&<>=" + "".join(map(chr, range(0x2400, 0x2500)))
# Emoji sequences are one token each: a character with its skin-tone modifiers, variation selectors and tags, or
# characters joined by zero-width joiners, or a pair of regional indicators (a flag). Left alone, a model would
# learn and sample the modifiers as letters of their own. Combining accents stay tokens of their own.
EMOJI_PARTS = "\U0001f3fb-\U0001f3ff\ufe00-\ufe0f\U000e0020-\U000e007f"
TOKEN = re.compile(f"[\U0001f1e6-\U0001f1ff]{{2}}|.(?:[{EMOJI_PARTS}]|\u200d.)*", re.S)
SEQUENCE_PART = re.compile(f"[{EMOJI_PARTS}\u200d\U0001f1e6-\U0001f1ff]")


def tokens_of(item: str) -> list[str]:
    """An item's tokens: its characters, an emoji sequence (skin tone, joined, flag) as one."""
    return TOKEN.findall(item) if SEQUENCE_PART.search(item) else list(item)


@dataclass(frozen=True)
class Vocab:
    """Index 0 is the boundary token (start and end of an item); the data's characters follow, sorted."""

    chars: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.chars)

    @property
    def boundary(self) -> str:
        return self.chars[0]

    def encode(self, item: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in tokens_of(item)]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


@dataclass
class Dataset:
    """The split items and their example tensors: X is [N, block_size] int64 contexts, Y is [N] next tokens."""

    vocab: Vocab
    block_size: int
    words: dict[str, list[str]]
    X: dict[str, torch.Tensor]
    Y: dict[str, torch.Tensor]


def resolve_path(path: str | None) -> Path:
    """`None` or 'builtin' means the packaged names.txt."""
    return BUILTIN_NAMES if path in BUILTIN_PATHS else Path(path).expanduser()


def read_items(path: Path, given_as: str = "data.path=") -> list[str]:
    """Read UTF-8 text, one item per line (LF, CRLF or CR alone); line ends stripped, blank lines dropped.
    `given_as`: how the user named the file (the fix each refusal prints)."""
    fix = f"pass {given_as}<a UTF-8 text file with one item per line>"
    if not path.exists():
        raise MakemoreError(f"data file not found: {path}; {fix}")
    if not path.is_file():
        raise MakemoreError(f"data path is not a file: {path}; {fix}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MakemoreError(f"cannot read data file {path} ({e.strerror}); check its permissions, or {fix}") from None
    if utf16(raw):
        raise MakemoreError(f"data file {path} is UTF-16; re-save it as UTF-8")
    if b"\x00" in raw:
        raise MakemoreError(f"data file {path} looks binary (it contains NUL bytes); {fix}")
    try:
        text = raw.decode("utf-8-sig")  # -sig drops a leading byte-order mark
    except UnicodeDecodeError as e:
        raise MakemoreError(
            f"data file {path} is not valid UTF-8 (bad byte at offset {e.start}); re-save it as UTF-8"
        ) from None
    items = [item for item in re.split(r"\r\n|\r|\n", text) if item.strip()]
    if not items:
        raise MakemoreError(f"data file {path} has no items (it is empty or blank); {fix}")
    return items


def utf16(raw: bytes) -> bool:
    """A UTF-16 byte-order mark, or text whose every other byte is NUL (UTF-16 without a mark)."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    sample = raw[:4096]
    for nuls, chars in ((sample[1::2], sample[0::2]), (sample[0::2], sample[1::2])):
        if len(sample) >= 4 and nuls.count(0) == len(nuls) and 0 not in chars:
            return True
    return False


def build_vocab(items: list[str], boundary: str = ".") -> Vocab:
    """Boundary first, then the sorted tokens (characters, and emoji sequences); refuse a boundary that also occurs
    in the data."""
    if len(boundary) != 1 or boundary in "\r\n":
        raise MakemoreError(f"data.boundary must be one character other than a line end, got {boundary!r}")
    text = "".join(items)
    # one set of the whole text: a set per item costs ~0.1 s on the names, on every run's start
    chars = sorted(set().union(*map(tokens_of, items)) if SEQUENCE_PART.search(text) else set(text))
    if boundary in chars:
        free = next(c for c in BOUNDARY_CHOICES if c not in chars)
        raise MakemoreError(
            f"the boundary token {boundary!r} also occurs in the data; "
            f"choose another, e.g. {override('data.boundary', free)}"
        )
    return Vocab((boundary, *chars))


def split_items(items: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """The lectures' split: random.seed(seed); random.shuffle(items); cut by item counts."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise MakemoreError(f"data.fractions must be three positive numbers summing to 1, got {list(fractions)}")
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    n1 = int(fractions[0] * len(shuffled))
    n2 = int((fractions[0] + fractions[1]) * len(shuffled))
    parts = dict(zip(SPLITS, (shuffled[:n1], shuffled[n1:n2], shuffled[n2:])))
    if not all(parts.values()):
        sizes = {k: len(v) for k, v in parts.items()}
        raise MakemoreError(f"{len(items)} items are too few to split {list(fractions)} (got {sizes}); add data")
    return parts


def build_examples(items: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every next token of every item (end boundary included) with its block_size predecessors, left-padded."""
    text = "\n".join(items)
    if all(len(token) == 1 for token in vocab.chars):  # vectorised: 228k examples in milliseconds, not a loop
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        char_codes = np.array([ord(c) for c in vocab.chars[1:]], dtype="<u4")
        tokens = np.where(codes == ord("\n"), 0, np.searchsorted(char_codes, codes) + 1)
    else:  # emoji sequences: one token of several characters each
        index = {c: i for i, c in enumerate(vocab.chars)}
        ids = [i for item in items for i in (*(index[token] for token in tokens_of(item)), 0)]
        tokens = np.array(ids[:-1])  # the last end is appended below, as for plain characters
    tokens = np.append(tokens, 0).astype(np.int64)
    is_end = tokens == 0
    item_of = np.cumsum(is_end) - is_end  # how many items end before each position
    item_start = np.concatenate(([0], np.flatnonzero(is_end)[:-1] + 1))[item_of]
    positions = np.arange(len(tokens))[:, None] - block_size + np.arange(block_size)[None, :]
    context = np.where(positions >= item_start[:, None], tokens[np.clip(positions, 0, None)], 0)
    return torch.from_numpy(np.ascontiguousarray(context)), torch.from_numpy(tokens)


def build_items(items: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole items for sequence models, one row each, padded to the longest: inputs [boundary, c1..cn, 0...] and
    targets [c1..cn, boundary, -1...]. Position t's target is example t of build_examples; -1 marks padding."""
    index = {c: i for i, c in enumerate(vocab.chars)}
    ids = [[index[c] for c in tokens_of(item)] for item in items]
    sizes = np.array([len(item) for item in ids])
    tokens = np.fromiter((i for item in ids for i in item), dtype=np.int64, count=int(sizes.sum()))
    rows = np.repeat(np.arange(len(ids)), sizes)  # each token's item, and its position in that item below
    positions = np.arange(len(tokens)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    inputs = np.zeros((len(ids), sizes.max() + 1), dtype=np.int64)
    targets = np.full(inputs.shape, -1, dtype=np.int64)
    inputs[rows, positions + 1] = tokens
    targets[rows, positions] = tokens
    targets[np.arange(len(ids)), sizes] = 0
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def load_dataset(
    path: str | None, block_size: int, boundary: str = ".", fractions=(0.8, 0.1, 0.1), seed: int = 42
) -> Dataset:
    """Read, split and cut a dataset; `path=None` is the built-in names.txt."""
    items = read_items(resolve_path(path))
    return make_dataset(items, build_vocab(items, boundary), block_size, fractions, seed)


def make_dataset(items: list[str], vocab: Vocab, block_size: int, fractions=(0.8, 0.1, 0.1), seed: int = 42) -> Dataset:
    """Split items that were already read and cut each split into examples."""
    if block_size < 1:
        raise MakemoreError(f"model.block_size must be at least 1, got {block_size}")
    words = split_items(items, tuple(fractions), seed)
    X, Y = {}, {}
    for split, split_words in words.items():
        X[split], Y[split] = build_examples(split_words, vocab, block_size)
    return Dataset(vocab, block_size, words, X, Y)


def trains_on_whole_items(model: object, dataset: Dataset, overfit_batch: int = 0) -> bool:
    """A causal model (one with forward_items) whose block_size holds every item's whole prefix trains on items:
    the same examples and predictions as windows, ~8x fewer forward passes. debug=overfit keeps its windows."""
    longest = max(len(item) for items in dataset.words.values() for item in items)
    return hasattr(model, "forward_items") and dataset.block_size > longest and not overfit_batch
