"""Everything that must hold before a run writes a byte: the schema, the data file, the memory it needs, the device.

The run-record callback (makemore.record) calls `prepare` before Hydra creates a run directory, and the run
itself (makemore.train) calls it again in a sweep member's new directory.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torch.overrides import TorchFunctionMode

from makemore import loggers
from makemore.data import Vocab, build_vocab, read_items, resolve_path, split_items
from makemore.errors import MakemoreError
from makemore.models import build_model, eval_rows
from makemore.schema import validate

# What shrinks each part of a run's memory, for the refusal that names the largest.
SHRINK = {
    "weights and optimizer": "make the model smaller (model.emb, model.hidden, model.n_embd, ...)",
    "examples": "the examples take most of it: use a smaller data file or a shorter model.block_size",
    "logits": "the logits take most of it: lower batch_size (null trains on the whole split at once)",
}


def prepare(cfg: DictConfig, known: tuple[list[str], Vocab] | None = None) -> tuple[DictConfig, list[str], Vocab]:
    """Everything that can refuse a run before it writes a byte: the schema, the device, the loggers' settings
    (W&B online without credentials), the data file and its split, the memory it needs and the model's output on
    one batch (on the run's own torch threads, set here). `known`: the data's items and vocabulary, already read
    and checked for a run of the same data.

    Returns the checked config, the data's items and its vocabulary.
    """
    cfg = validate(cfg)
    pick_device(cfg.device)
    # from the process's first kernel: tiny models run ~12x slower on 2 threads than on 1, and an OpenMP team once
    # started stays, where a process with no other thread may fork (makemore.pictures, makemore.workers)
    torch.set_num_threads(cfg.threads)
    loggers.preflight(OmegaConf.to_container(cfg.logger))
    if known is None:
        items = read_items(resolve_path(cfg.data.path))
        vocab = build_vocab(items, cfg.data.boundary)
        split_items(items, tuple(cfg.data.fractions), cfg.data.seed)  # too few items for the split are refused here
    else:
        items, vocab = known
    check_memory(cfg, vocab.size, sum(map(len, items)) + len(items))
    check_model(cfg.model, vocab.size)
    return cfg, items, vocab


def check_model(model_config: DictConfig, vocab_size: int) -> None:
    """One forward pass on a batch of two contexts: the logits must be [B, V] (and [B, T, V] from forward_items),
    floating and finite, and the model must have a trainable parameter unless it is trained by counting."""
    model = build_model(model_config, vocab_size).eval()
    what = f"model {model_config.name} ({model_config._target_})"
    by_counting = getattr(model, "trained_by_counting", False)
    if not by_counting and not any(p.requires_grad for p in model.parameters()):
        raise MakemoreError(
            f"{what} has no trainable parameter, so gradient descent cannot change it; "
            "register its weights as nn.Parameter (or nn.Embedding, nn.Linear, ...)"
        )
    context = torch.zeros(2, model_config.block_size, dtype=torch.long)
    calls = [("forward(context[2, block_size])", lambda: model(context), (2, vocab_size))]
    if hasattr(model, "forward_items"):
        calls.append(
            (
                "forward_items(tokens[2, block_size])",
                lambda: model.forward_items(context),
                (2, model_config.block_size, vocab_size),
            )
        )
    for call, forward, shape in calls:
        try:
            with torch.no_grad():
                logits = forward()
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".strip().splitlines()[0]
            raise MakemoreError(f"{what}: {call} failed ({reason}); fix the model's forward") from None
        if not isinstance(logits, torch.Tensor):
            raise MakemoreError(
                f"{what}: {call} returned a {type(logits).__name__}, not a tensor of logits "
                f"[{', '.join(map(str, shape))}]; return the logits tensor"
            )
        if tuple(logits.shape) != shape:
            raise MakemoreError(
                f"{what}: {call} returned shape [{', '.join(map(str, logits.shape))}], not "
                f"[{', '.join(map(str, shape))}] (a logit per vocabulary entry, V={vocab_size}); "
                "fix its output layer's size to vocab_size"
            )
        if not logits.is_floating_point():
            raise MakemoreError(f"{what}: {call} returned {logits.dtype} logits; return floating-point logits")
        if not by_counting and (logits.isnan().any() or logits.isposinf().any()):  # -inf is a probability of 0
            raise MakemoreError(
                f"{what}: {call} returned NaN or +inf logits at initialisation; check its initialisation and forward"
            )


def pick_device(name: str) -> torch.device:
    """cpu, cuda, mps (Apple's GPU), or auto: the first of cuda, mps and cpu that this machine has."""
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(device for device, present in has.items() if present))
    if not has[name]:
        what = "a CUDA GPU" if name == "cuda" else "Apple's MPS GPU"
        raise MakemoreError(f"device={name} but {what} is not available here; use device=cpu or device=auto")
    return torch.device(name)


def memory_needed(cfg: DictConfig, vocab_size: int, tokens: int) -> dict[str, int]:
    """Bytes a run needs, by part: the model sized on the meta device (no allocation) with its gradient and two
    optimizer moments, the examples of every split, and the largest logits of a training step or an evaluation
    chunk."""
    with torch.device("meta"), ShapesOnly():
        probe = build_model(cfg.model, vocab_size)  # a table too large is refused here, with its own message
    model = sum(t.numel() for t in probe.parameters()) * 4 * 4 + sum(b.numel() for b in probe.buffers()) * 4
    examples = tokens * (cfg.model.block_size + 1) * 8 * 4  # int64 X and Y, and the temporaries that cut them
    train_rows = int(tokens * cfg.data.fractions[0]) + 1 if cfg.batch_size is None else cfg.batch_size
    logits = (train_rows + eval_rows(vocab_size)) * vocab_size * 4 * 3  # logits, softmax and gradient
    return {"weights and optimizer": model, "examples": examples, "logits": logits}


class ShapesOnly(TorchFunctionMode):
    """Random fills of meta tensors skipped: they hold no values, and the first normal_ on the meta device imports
    torch._dynamo to fill nothing (~2.5 s here; a sweep's own process, which trains nothing, need not pay it)."""

    FILLS = frozenset({"normal_", "log_normal_", "cauchy_", "exponential_", "geometric_", "random_", "bernoulli_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        filled = args[0] if args else kwargs.get("tensor")  # torch.nn.init's fills name it `tensor`
        if getattr(func, "__name__", "") in self.FILLS and isinstance(filled, torch.Tensor) and filled.is_meta:
            return filled
        return func(*args, **kwargs)


def check_memory(cfg: DictConfig, vocab_size: int, tokens: int) -> None:
    """Refuse a run that cannot fit in 80% of the memory available now, naming the part that takes the most."""
    parts = memory_needed(cfg, vocab_size, tokens)
    needed, available = sum(parts.values()), available_memory()
    if available and needed > 0.8 * available:
        shown = ", ".join(f"{name} {size / 2**30:,.1f}" for name, size in parts.items())
        largest = max(parts, key=parts.get)
        raise MakemoreError(
            f"model {cfg.model.name} needs about {needed / 2**30:,.1f} GiB to train but only "
            f"{available / 2**30:,.1f} GiB is free ({shown} GiB); {SHRINK[largest]}"
        )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
