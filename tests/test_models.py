"""Models: shapes and parameter counts, counting by hand, additive = one-hot, size guards."""

import inspect
import math
import re

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from makemore import models, schema
from makemore.data import build_items, build_vocab, load_dataset, make_dataset
from makemore.errors import MakemoreError
from makemore.fields import field_range
from makemore.models import (
    MLP,
    OPTIONS,
    RNN,
    Additive,
    NgramCounts,
    NgramTable,
    build_model,
    eval_rows,
    loss_on,
    schema_of,
    scoring,
    tables,
    target_of,
)
from makemore.schema import on_command_line

from helpers import ROOT, compose_config, group_options


def linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


# Counted from the layer sizes, independently of the code.
WAVENET = 27 * 24 + linear(48, 128, False) + 2 * 128 + 2 * (linear(256, 128, False) + 2 * 128) + linear(128, 27)
TRANSFORMER_BLOCK = 2 * 2 * 64 + linear(64, 192) + linear(64, 64) + linear(64, 256) + linear(256, 64)
TRANSFORMER = 27 * 64 + 16 * 64 + 4 * TRANSFORMER_BLOCK + 2 * 64 + linear(64, 27, False)
BOW = 27 * 64 + 16 * 64 + linear(64, 64) + linear(64, 64) + linear(64, 27)  # makemore.py's BoW at its sizes


@pytest.mark.parametrize(
    "model, params",
    [
        ("bigram_count", 27 * 27),
        ("trigram_count", 27**3),
        ("trigram_table", 19_683),
        ("additive", 1_458),
        ("mlp", 11_897),
        ("wavenet", WAVENET),
        ("rnn", 64 + 27 * 64 + linear(128, 64) + linear(64, 27)),
        ("gru", 64 + 27 * 64 + 3 * linear(128, 64) + linear(64, 27)),
        ("bow", BOW),
        ("transformer", TRANSFORMER),
    ],
)
def test_every_model_config_builds_with_the_right_size(model, params):
    cfg = compose_config(f"model={model}")
    net = build_model(cfg.model, 27)
    context = torch.randint(27, (5, cfg.model.block_size))
    assert net(context).shape == (5, 27)
    counted = sum(p.numel() for p in net.parameters()) or sum(b.numel() for b in net.buffers())
    assert counted == params


def test_models_size_themselves_from_the_vocabulary():
    assert build_model(compose_config("model=additive").model, 40).W.shape == (80, 40)
    assert build_model(compose_config("model=trigram_table", "model.block_size=3").model, 5).W.numel() == 5**4


def test_count_model_loss_equals_a_hand_computation():
    words = ["ab", "abb", "ba"]
    ds_vocab = load_vocab_free(words)
    X, Y = ds_vocab
    model = NgramCounts(3, block_size=1, alpha=0.5)
    model.fit(X, Y)
    # Pairs: .a a b b . | .a a b b b b . | .b b a a .  (vocab . a b)
    counts = {".": {"a": 2, "b": 1}, "a": {"b": 2, ".": 1}, "b": {".": 2, "b": 1, "a": 1}}
    order = ".ab"
    expected = 0.0
    for x, y in zip(X[:, 0].tolist(), Y.tolist()):
        row = counts.get(order[x], {})
        p = (row.get(order[y], 0) + 0.5) / (sum(row.values()) + 0.5 * 3)
        expected -= math.log(p)
    assert loss_on(model, X, Y, 3) == pytest.approx(expected / len(Y), rel=1e-6)


def load_vocab_free(words):
    """Examples for a 3-token vocabulary without touching the file system."""
    from makemore.data import Vocab, build_examples

    return build_examples(words, Vocab((".", "a", "b")), 1)


def test_unsmoothed_counts_give_infinite_loss_on_unseen_pairs():
    model = NgramCounts(3, block_size=1, alpha=0.0)
    model.fit(torch.tensor([[0], [1]]), torch.tensor([1, 0]))
    assert math.isinf(loss_on(model, torch.tensor([[0]]), torch.tensor([2]), 3))
    assert torch.allclose(model(torch.tensor([[2]])).exp(), torch.full((1, 3), 1 / 3))  # unseen context: uniform


def test_additive_equals_the_one_hot_formulation():
    torch.manual_seed(0)
    model = Additive(27, block_size=2)
    context = torch.randint(27, (100, 2))
    one_hot = torch.cat([F.one_hot(context[:, 0], 27), F.one_hot(context[:, 1], 27)], 1).float()
    assert torch.allclose(model(context), one_hot @ model.W, atol=1e-5)


def test_trigram_table_indexes_by_both_characters():
    model = NgramTable(27, block_size=2)
    assert torch.equal(model(torch.tensor([[3, 7]]))[0], model.W[3, 7])


def test_too_large_tables_are_refused_with_their_memory():
    with pytest.raises(MakemoreError, match=r"GiB.*smaller block_size"):
        NgramTable(27, block_size=5)


@pytest.mark.parametrize(
    "model, vocab, block, entries, memory",
    [
        (NgramCounts, 27, 6, f"{27**7:,}", f"about {27**7 * 16 / 2**30:,.1f} GiB"),  # 10,460,353,203: 155.9 GiB
        (NgramTable, 100, 7, "100^8", "more memory than exists"),  # 16 digits: written as a power
        (NgramTable, 50, 9, "50^10", "more memory than exists"),  # 16.99 digits
    ],
)
def test_a_table_too_large_is_refused_with_its_size_and_memory(model, vocab, block, entries, memory):
    name = "count table" if model is NgramCounts else "logits table"
    with pytest.raises(MakemoreError) as refused:
        model(vocab, block_size=block)
    assert str(refused.value) == (
        f"{name} with block_size {block} over {vocab} tokens needs {entries} entries ({memory} "
        f"to train), above the cap of 50,000,000; use a smaller block_size"
    )


def test_a_table_under_the_cap_is_built():
    assert NgramCounts(27, block_size=4).counts.shape == (27**4, 27)  # 14.3M entries


def test_an_mlp_is_embedding_tanh_layers_and_output():
    model = MLP(27, 3, emb=4, hidden=8, layers=2, norm="batch", dropout=0.5)
    assert [type(m).__name__ for m in model.hidden] == [
        "Dropout",
        "Linear",
        "BatchNorm1d",
        "Tanh",
        "Dropout",
        "Linear",
        "BatchNorm1d",
        "Tanh",
        "Dropout",
    ]
    linears = [m for m in model.hidden if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias) for m in linears] == [(12, 8, None), (8, 8, None)]
    assert (model.output.in_features, model.output.out_features) == (8, 27) and model.direct is None
    layer = MLP(27, 2, emb=3, hidden=5, norm="layer")
    assert [type(m).__name__ for m in layer.hidden] == ["Linear", "LayerNorm", "Tanh"] and layer.hidden[
        0
    ].bias is not None
    direct = MLP(27, 2, emb=3, hidden=5, direct=True)
    context = torch.tensor([[1, 2], [3, 0]])
    x = direct.embedding(context).flatten(1)
    assert torch.allclose(direct(context), direct.output(direct.hidden(x)) + direct.direct(x))
    assert not MLP(27, 3).manual_backward and MLP(27, 3, backward="manual").manual_backward


def test_the_inits_are_the_lectures():
    torch.manual_seed(0)
    scaled = MLP(27, 3, emb=10, hidden=500, direct=True)
    gain = 5 / 3
    assert scaled.hidden[0].weight.std().item() == pytest.approx(gain / math.sqrt(30), rel=0.05)
    assert scaled.output.weight.std().item() == pytest.approx(0.01 * gain / math.sqrt(500), rel=0.05)
    assert scaled.direct.weight.std().item() == pytest.approx(0.01 * gain / math.sqrt(30), rel=0.1)
    assert not scaled.hidden[0].bias.any() and not scaled.output.bias.any()
    assert scaled.embedding.weight.std().item() == pytest.approx(1.0, rel=0.1)  # embeddings stay N(0, 1)
    randn = MLP(27, 3, emb=10, hidden=500, init="randn")
    assert torch.cat([p.flatten() for p in randn.parameters()]).std().item() == pytest.approx(1.0, rel=0.05)
    assert randn.output.bias.abs().min() > 0  # biases too: every parameter
    torch.manual_seed(1)
    default = MLP(27, 3, hidden=500, init="torch")  # PyTorch's own: uniform within 1/sqrt(fan_in)
    assert default.hidden[0].weight.abs().max().item() <= 1 / math.sqrt(30) and default.output.bias.any()


def test_mlp_options_change_its_shape():
    base = sum(p.numel() for p in MLP(27, 3).parameters())
    assert sum(p.numel() for p in MLP(27, 3, direct=True).parameters()) == base + 30 * 27
    assert sum(p.numel() for p in MLP(27, 3, layers=2).parameters()) == base + 200 * 200 + 200
    assert sum(p.numel() for p in MLP(27, 3, norm="batch").parameters()) == base - 200 + 2 * 200


def test_scaled_init_starts_at_ln_v():
    torch.manual_seed(0)
    ds = load_dataset(None, 3)
    scaled = loss_on(MLP(27, 3, init="scaled"), ds.X["dev"], ds.Y["dev"], 27)
    lecture = loss_on(MLP(27, 3, init="randn"), ds.X["dev"], ds.Y["dev"], 27)
    assert abs(scaled - math.log(27)) < 0.05 and lecture > 10


def test_a_split_longer_than_a_chunk_is_evaluated_whole():
    torch.manual_seed(0)
    names = load_dataset(None, 3)
    train = names.X["train"], names.Y["train"]
    assert len(train[1]) > 2 * 65536  # three chunks
    model = MLP(27, 3, emb=4, hidden=16)
    with torch.no_grad():
        expected = F.cross_entropy(model(train[0]).double(), train[1]).item()
    assert loss_on(model, *train, 27) == pytest.approx(expected, rel=1e-6)


def test_wavenet_at_the_lecture_sizes_has_the_lecture_count():
    assert WAVENET == 76_579  # lecture 5's printed parameter count


@pytest.mark.parametrize("model", ["rnn", "gru", "bow", "transformer"])
def test_whole_item_loss_equals_the_per_window_loss(model):
    """Training and evaluating on whole items must report the windows' quantity: the same examples, each
    given the prediction its own window gets (left padding dropped), so the mean cross-entropy agrees."""
    items = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "x", "zo", "bo"] * 3
    vocab = build_vocab(items)
    dataset = make_dataset(items, vocab, 10, (0.6, 0.2, 0.2), 1)
    torch.manual_seed(0)
    net = build_model(compose_config(f"model={model}", "model.block_size=10").model, vocab.size)
    X, Y = build_items(dataset.words["train"], vocab)
    assert (Y >= 0).sum() == len(dataset.Y["train"])  # one target per window
    per_window = F.cross_entropy(net(dataset.X["train"]), dataset.Y["train"], reduction="none")
    per_item = F.cross_entropy(net.forward_items(X).flatten(0, 1), Y.flatten(), ignore_index=-1, reduction="none")
    assert torch.allclose(per_item[Y.flatten() >= 0], per_window, atol=1e-5)  # example by example, in order
    assert loss_on(net, X, Y, vocab.size) == pytest.approx(
        loss_on(net, dataset.X["train"], dataset.Y["train"], vocab.size), abs=1e-6
    )


def test_bow_is_makemore_pys_bag_of_words():
    """The running mean equals makemore.py's CausalBoW: softmax over a causal mask of zeros, times x."""
    torch.manual_seed(0)
    net = build_model(compose_config("model=bow").model, 27)
    assert BOW == 12_827
    tokens = torch.randint(27, (4, 16))
    x = net.wte(tokens) + net.wpe(torch.arange(16))
    mask = torch.tril(torch.ones(16, 16))
    attention = F.softmax(torch.zeros(4, 16, 16).masked_fill(mask == 0, float("-inf")), dim=-1)
    x = x + attention @ x
    x = x + net.c_proj(torch.tanh(net.c_fc(x)))
    assert torch.allclose(net.forward_items(tokens), net.lm_head(x), atol=1e-6)


def test_a_window_prediction_ignores_left_padding_but_not_the_start_token():
    torch.manual_seed(0)
    net = build_model(compose_config("model=gru", "model.block_size=6").model, 5)
    padded, short = torch.tensor([[0, 0, 0, 0, 3, 2]]), torch.tensor([[0, 3, 2]])
    assert torch.allclose(net(padded), net(short))
    assert not torch.allclose(net(short), net(torch.tensor([[3, 2]])))  # the start token is context, not padding


@pytest.mark.parametrize("model", OPTIONS)
def test_every_model_has_a_picture(model):
    from makemore.plots import model_figures

    vocab = build_vocab(["abc", "cab"])
    net = build_model(compose_config(f"model={model}").model, vocab.size)
    (tag,) = model_figures(net, vocab)
    expected = {
        "bigram_count": "model/next_token",
        "trigram_count": "model/next_token",
        "trigram_table": "model/next_token",
        "additive": "model/weights",
    }.get(model, "model/embeddings")
    assert tag == expected


def test_evaluation_runs_in_chunks_of_eval_rows_next_tokens_and_skips_padding(monkeypatch):
    chunks = []
    predict = scoring.predict
    monkeypatch.setattr(scoring, "predict", lambda model, X, Y: (chunks.append(len(X)), predict(model, X, Y))[1])
    torch.manual_seed(0)
    windows, Y = torch.randint(27, (70_000, 5)), torch.randint(27, (70_000,))  # more distinct rows than a chunk
    mlp = MLP(27, 5, emb=2, hidden=4)
    assert loss_on(mlp, windows, Y, 27) == pytest.approx(F.cross_entropy(mlp(windows), Y).item(), rel=1e-6)
    assert chunks == [65536, 70_000 - 65536]  # 65,536 rows of 27 logits: eval_rows(27)
    chunks.clear()
    items, targets = torch.randint(5, (40_000, 4)), torch.randint(5, (40_000, 4))
    targets[::3, -1] = -1  # padding past an item's end: not a next token
    rnn = RNN(5, block_size=4, n_embd=3, n_embd2=6, cell="gru")
    expected = F.cross_entropy(rnn.forward_items(items)[targets >= 0], targets[targets >= 0]).item()
    assert loss_on(rnn, items, targets, 5) == pytest.approx(expected, rel=1e-6)
    assert chunks == [16384, 16384, 40_000 - 32768]  # items of 4 next tokens: 65,536 / 4 items a chunk


class Layers(nn.Module):
    """A user's model whose config holds a list: it is handed a plain list, as the model's own code expects."""

    def __init__(self, vocab_size: int, sizes: list):
        super().__init__()
        self.sizes = sizes


class Refuses(nn.Module):
    """A user's model whose constructor raises: the run says why in one line."""

    def __init__(self, vocab_size: int, why: str):
        super().__init__()
        raise (MakemoreError if why == "makemore" else ValueError)(f"{why} is not allowed\nsecond line")


def test_a_users_model_is_built_from_its_config_or_refused_in_one_line():
    from omegaconf import OmegaConf

    model = build_model(OmegaConf.create({"name": "mine", "_target_": "test_models.Layers", "sizes": [4, 5]}), 27)
    assert type(model.sizes) is list and model.sizes == [4, 5]
    for target, options, reason in [  # each cause gets its own fix
        (
            "no_such_module.Model",
            {},
            "ModuleNotFoundError: No module named 'no_such_module'; its module must be "
            "importable (put its directory on PYTHONPATH)",
        ),
        (
            "test_models.Layerz",
            {},
            "module test_models has no 'Layerz'; check the spelling of model._target_ (module.Class)",
        ),
        (
            "makemore.models.Nope",
            {},
            "module makemore.models has no 'Nope'; check the spelling of model._target_ (module.Class)",
        ),
        ("NoModule", {}, "module ? has no 'NoModule'; check the spelling of model._target_ (module.Class)"),
        (
            "test_models.Refuses",
            {"why": "size 0"},
            "its constructor failed (ValueError: size 0 is not allowed); "
            "check the model's config keys against its __init__ parameters",
        ),
        (
            "test_models.Layers",
            {"sizes": [1], "colour": 2},
            "its constructor failed (TypeError: Layers.__init__() got "
            "an unexpected keyword argument 'colour'); check the "
            "model's config keys against its __init__ parameters",
        ),
    ]:
        with pytest.raises(MakemoreError) as refused:
            build_model(OmegaConf.create({"name": "mine", "_target_": target, **options}), 27)
        assert str(refused.value) == f"cannot build model mine from {target}: {reason}"
    with pytest.raises(MakemoreError) as refused:  # the package's own refusals pass through as they are
        build_model(OmegaConf.create({"name": "mine", "_target_": "test_models.Refuses", "why": "makemore"}), 27)
    assert str(refused.value) == "makemore is not allowed\nsecond line"


def test_evaluation_chunks_are_sized_from_the_vocabulary():
    assert eval_rows(27) == 65536
    rows = 256 * 2**20 // (20_001 * 3 * 4)  # 256 MiB over three float32 rows of V: logits, softmax, gradient
    assert eval_rows(20_001) == rows == 1118 and isinstance(eval_rows(20_001), int)
    assert eval_rows(30_000_000) == 1  # a chunk holds at least one row, whatever the vocabulary
    model = MLP(50, 2, emb=3, hidden=4)
    X, Y = torch.randint(50, (5000, 2)), torch.randint(50, (5000,))
    whole = torch.nn.functional.cross_entropy(model.eval()(X), Y).item()
    assert loss_on(model, X, Y, 50) == pytest.approx(whole, rel=1e-6)


def test_table_sizes_up_to_the_cap_are_allowed_and_small_buffers_stay_out_of_checkpoints():
    tables.check_table_size("table", models.MAX_TABLE_ENTRIES, 0)  # exactly the cap: allowed
    with pytest.raises(MakemoreError, match="above the cap of 50,000,000"):
        tables.check_table_size("table", models.MAX_TABLE_ENTRIES + 1, 0)
    assert NgramCounts(27, 2).alpha == 1.0  # Laplace's add-one, for a table built without a config
    assert list(Additive(27, 2).state_dict()) == ["W"]  # the offsets are derived, not saved


def test_the_count_table_holds_probabilities():
    model = NgramCounts(3, block_size=1, alpha=0.01)  # totals below 1 for unseen contexts: no clamp may touch them
    model.fit(torch.tensor([[0], [0], [1]]), torch.tensor([1, 2, 0]))
    table = model.probabilities()  # the heatmap shows it as it is: rows must sum to one, not just rank alike
    assert torch.allclose(table.sum(1), torch.ones(3))
    assert table[0].tolist() == pytest.approx([0.01 / 2.03, 1.01 / 2.03, 1.01 / 2.03])
    assert table[2].tolist() == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("model_name", ["mlp", "wavenet", "trigram_table"])
def test_each_distinct_context_scored_once_gives_every_rows_loss_to_the_last_digit(model_name):
    """loss_on computes each distinct context's logits once (dev at block_size 3: 2,965 rows for 22,655): in eval
    mode a row's logits do not depend on the rows beside it, so the loss is that of every row in chunks."""
    cfg = compose_config(f"model={model_name}")
    data = load_dataset(None, cfg.model.block_size)
    model = build_model(cfg.model, 27).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    X, Y = data.X["dev"], data.Y["dev"]
    every_row = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(X), eval_rows(27)):
            logits = model(X[start : start + eval_rows(27)])
            every_row += F.cross_entropy(logits, Y[start : start + eval_rows(27)], reduction="sum").double()
    assert len(models.distinct_rows(X, 27)[0]) < len(X) // 2
    assert loss_on(model, X, Y, 27) == (every_row / len(Y)).item()


def registry_table() -> str:
    """The README's table of built-in models, as the registry has them."""
    rows = ["| option | class | config (defaults) | `budget=` steps |", "| --- | --- | --- | --- |"]
    for name, option in OPTIONS.items():
        config = {k: v for k, v in option.config().items() if k not in ("_target_", "name")}
        keys = " ".join(f"{k}={on_command_line(v)}" for k, v in config.items())
        budget = "counting" if option.budget_steps is None else str(option.budget_steps)
        budget += f", optim={option.budget_optim}" if option.budget_optim else ""
        rows.append(f"| `{name}` | `{target_of(option.model_class)}` | {keys} | {budget} |")
    return "\n".join(rows) + "\n"


def test_the_readme_model_table_is_the_registry():
    assert registry_table() in (ROOT / "README.md").read_text()


def test_every_model_option_is_its_constructor_and_every_key_has_a_range():
    assert group_options("model") == sorted(OPTIONS) and not (ROOT / "conf" / "model").exists()
    for name, option in OPTIONS.items():
        composed = OmegaConf.to_container(compose_config(f"model={name}").model)
        assert composed == option.config()
        signature = inspect.signature(option.model_class.__init__).parameters
        for key, value in composed.items():
            if key in ("_target_", "name"):
                continue
            default = signature[key].default
            assert value == option.preset.get(key, default), f"model={name}: {key} is not its constructor's"
            rule = field_range(schema_of(option.model_class), key)
            assert rule or isinstance(value, bool), f"model={name}: model.{key} has no allowed range"


def test_a_range_written_beside_a_model_is_the_one_validate_applies():
    for override, message in [
        ("model.emb=0", "model.emb=0 is not allowed: model.emb must be a positive integer"),
        ("model.norm=group", "model.norm=group is not allowed: model.norm must be one of none, batch, layer"),
        ("model.dropout=1.5", "model.dropout=1.5 is not allowed: model.dropout must be a number in [0, 1)"),
    ]:
        with pytest.raises(MakemoreError, match=re.escape(message)):
            schema.validate(compose_config(override))
    with pytest.raises(MakemoreError, match="model.alpha=-1 is not allowed: model.alpha must be a number >= 0"):
        schema.validate(compose_config("model=trigram_count", "model.alpha=-1"))
    with pytest.raises(MakemoreError, match="model.cell=lstm is not allowed"):
        schema.validate(compose_config("model=rnn", "model.cell=lstm"))
