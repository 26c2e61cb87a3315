"""Which members of a sweep train together as one population (makemore.population), and why a member does not.

Members stack when they differ only in numbers that change no tensor's shape (`STACKABLE`), share how they are
evaluated and logged (`SHARED`), start from the same step, and their model trains stacked with each member's
numbers equal to its solo run's (makemore.stacked.why_not_stacked). A population holds at most `max_members`, and
no more than memory allows; a member that stacks with nobody runs alone, as with any launcher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from makemore.config import flatten
from makemore.errors import MakemoreError
from makemore.loop import batch_indices
from makemore.models import build_model
from makemore.optimizers import family_of
from makemore.preflight import available_memory, memory_needed, pick_device, prepare
from makemore.rundir import is_watch_key
from makemore.stacked import StackedMLP, StackedTable, handwritten, torch_threads, why_not_stacked
from makemore.train import run_data

# Keys (or groups of keys, ending with a dot) whose values may differ within a population: each member's own numbers.
STACKABLE = (
    "seed",
    "steps",
    "optim.lr",
    "optim.weight_decay",
    "optim.betas",
    "optim.momentum",
    "schedule.",
    "label_smoothing",
    "model.init",
    "early_stopping",
    "diverge_above",
    "target",
    "trial",
    "checkpoint_interval",
    "samples",
)
# Watch keys a population's members must share: it evaluates and logs them at the same steps, on one device, with
# torch's threads at their solo runs' number (a kernel may sum in another order on more threads).
SHARED = ("log_interval", "eval_interval", "device", "threads")
ENGINES = {StackedMLP: "the MLP's gradients by hand, batched", StackedTable: "the table's gradients by hand, batched"}


def stackable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in STACKABLE)


@dataclass
class Member:
    """A launched job as grouping sees it: its index in the launch, its name, its composed config and the step it
    starts from (0, or its checkpoint's)."""

    index: int
    name: str
    config: DictConfig
    start: int


@dataclass
class Population:
    """Members that train together: what they differ in, and what sets them apart from the launch's other groups."""

    members: list[Member]
    differ: list[str]
    apart: list[str]
    engine: str


@dataclass
class Alone:
    """A member that trains on its own, and why."""

    member: Member
    reason: str


def task_values(config: DictConfig) -> dict:
    """A composed job config's own keys (not Hydra's), resolved and flattened."""
    return flatten(
        OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), resolve=True)
    )


def shape_key(flat: dict) -> dict:
    """The values a population's members must share (of a config's task_values): every key but the stackable ones
    and the other watch keys."""
    return {k: v for k, v in flat.items() if not stackable(k) and (not is_watch_key(k) or k.split(".")[0] in SHARED)}


def plan(members: list[Member], max_members: int, shared: dict | None = None) -> list[Population | Alone]:
    """The launch as populations and lone members, in the order of their first members. `shared`: where the data
    the checks read is kept for the runs (makemore.train.run_data)."""
    groups: dict[str, list[Member]] = {}
    keys, values = {}, {m.index: task_values(m.config) for m in members}  # ~10 ms a member: once
    for m in members:
        key = shape_key(values[m.index])
        keys[m.index] = key
        groups.setdefault(repr((m.start, sorted(key.items(), key=str))), []).append(m)
    units: list[Population | Alone] = []
    for group in groups.values():
        if len(group) == 1:
            units.append(Alone(group[0], "it stacks with no other member (" + apart(group[0], members, keys) + ")"))
            continue
        reason, engine, limit = check(group[:max_members], shared)  # as many as a population holds: the rest are
        # checked as their own populations start (a member refused there fails alone)
        if reason:
            units += [Alone(m, reason) for m in group]
            continue
        size = max(1, min(max_members, limit))
        for first in range(0, len(group), size):
            chunk = group[first : first + size]
            if len(chunk) == 1:
                units.append(Alone(chunk[0], f"the population before it is full (max_members={max_members})"))
                continue
            flat = [values[m.index] for m in chunk]
            differ = sorted(k for k in flat[0] if stackable(k) and len({str(f.get(k)) for f in flat}) > 1)
            units.append(Population(chunk, differ, differing_keys(chunk[0], members, keys), engine))
    return sorted(units, key=lambda u: (u.members[0] if isinstance(u, Population) else u.member).index)


def differing_keys(member: Member, members: list[Member], keys: dict) -> list[str]:
    """The shape keys in which the other members of the launch differ from this one."""
    own = keys[member.index]
    differ = {k for m in members for k in own.keys() | keys[m.index].keys() if own.get(k) != keys[m.index].get(k)}
    return sorted(differ)


def apart(member: Member, members: list[Member], keys: dict) -> str:
    differ = differing_keys(member, members, keys)
    if differ:
        shown = ", ".join(differ[:4]) + (", ..." if len(differ) > 4 else "")
        return f"the others differ in {shown}: each changes its tensors"
    starts = {m.start for m in members} - {member.start}
    return f"it continues from step {member.start:,}, the others from {', '.join(f'{s:,}' for s in sorted(starts))}"


def check(group: list[Member], shared: dict | None) -> tuple[str | None, str, int]:
    """Whether these members (alike in every shape key) can train stacked: (why not, or None; the engine that trains
    them; how many fit in memory at once)."""
    try:
        configs, known = [], None
        for m in group:
            checked, items, vocab = prepare(m.config, known)
            configs.append(checked)
            known = items, vocab
        device = pick_device(configs[0].device)
        models = []
        for cfg in configs:
            torch.manual_seed(cfg.seed)
            models.append(build_model(cfg.model, vocab.size).to(device))
        data = run_data(configs[0], items, vocab, models[0], device, shared)
    except MakemoreError as e:
        return f"its config is refused ({e})", "", 1
    if configs[0].overfit_batch:
        return "debug=overfit trains one model on one fixed batch", "", 1
    family = family_of(configs[0].optim)
    if not family.stacks():
        return (
            f"optim={configs[0].optim.name} has no stacked step ({family.__name__} leaves Optimizer.update unwritten): "
            "its update is torch.optim's, for one model",
            "",
            1,
        )
    whole_items = data.Y["train"].dim() == 2
    batch = data.rows_per_batch or configs[0].batch_size
    first = []
    for cfg in configs:
        if batch is None:
            first.append((data.X["train"], data.Y["train"]))
        else:
            rows = batch_indices(cfg.seed, 0, len(data.Y["train"]), batch, device)[0]
            first.append((data.X["train"][rows], data.Y["train"][rows]))
    with torch_threads(configs[0].threads):  # the probe compares at the threads the members will train on
        reason = why_not_stacked(models, first, whole_items)
    engine = ENGINES.get(handwritten(models[0]), "torch.func.vmap and autograd")
    return reason, engine, members_in_memory(configs[0], vocab.size, sum(map(len, items)) + len(items))


def members_in_memory(cfg: DictConfig, vocab_size: int, tokens: int) -> int:
    """How many members fit in 80% of the memory free now beside the examples they share, each needing its weights,
    optimizer state and logits (makemore.preflight.memory_needed)."""
    parts = memory_needed(cfg, vocab_size, tokens)
    free = available_memory()
    if free is None:
        return 1 << 30
    each = parts["weights and optimizer"] + parts["logits"]
    return max(1, math.floor((0.8 * free - parts["examples"]) / max(1, each)))


def lines(units: list[Population | Alone]) -> list[str]:
    """One line per population (and per lone member): what trains together and why a member does not."""
    out = []
    populations = [u for u in units if isinstance(u, Population)]
    for unit in units:
        if isinstance(unit, Population):
            number = populations.index(unit) + 1
            names = ", ".join(m.name for m in unit.members)
            differ = f"differing in {', '.join(unit.differ)}" if unit.differ else "alike"
            apart_by = f"; apart from the others by {', '.join(unit.apart[:4])}" if unit.apart else ""
            out.append(
                f"population {number} of {len(populations)}: {len(unit.members)} members stacked ({differ}{apart_by}; "
                f"{unit.engine}): {names}"
            )
        else:
            out.append(f"alone: {unit.member.name}: {unit.reason}")
    return out
