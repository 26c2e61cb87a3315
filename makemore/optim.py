"""Optimizers and learning-rate schedules: the `optim` and `schedule` groups' options (each one's keys, defaults
and ranges, written once here) and what is built from them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from makemore.fields import FRACTION, NON_NEGATIVE, POSITIVE_NUMBER, Range, defaults_of, ranged

UNIT_INTERVAL = Range(lambda v: 0 <= v <= 1, "a number in [0, 1]")


@dataclass
class SGDConfig:
    """Stochastic gradient descent: p -= lr * grad, with optional momentum and weight decay."""

    name: str
    lr: float = ranged(POSITIVE_NUMBER)  # no default: sgd and full_batch each give their own
    momentum: float = ranged(FRACTION, 0.0)
    weight_decay: float = ranged(NON_NEGATIVE, 0.0)  # weights and embeddings only


@dataclass
class AdamWConfig:
    """AdamW, fused."""

    name: str
    lr: float = ranged(POSITIVE_NUMBER, 0.01)
    betas: list[float] = ranged(
        Range(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9,0.99]"),
        [0.9, 0.99],
    )
    weight_decay: float = ranged(NON_NEGATIVE, 0.01)  # weights and embeddings only


@dataclass
class ConstantSchedule:
    """The same lr every step (the seed's full-batch descent)."""

    name: str


@dataclass
class StepSchedule:
    """The lectures': lr, then lr * gamma after a fraction of the steps."""

    name: str
    decay_at: float = ranged(Range(lambda v: 0 <= v <= 1, "a fraction of the steps in [0, 1]"), 0.5)
    gamma: float = ranged(POSITIVE_NUMBER, 0.1)


@dataclass
class WarmupSchedule:
    """A linear warmup over a fraction of the steps, then down to min_factor * lr (cosine or linear)."""

    name: str
    warmup: float = ranged(Range(FRACTION.test, "a fraction of the steps in [0, 1)"), 0.02)
    min_factor: float = ranged(UNIT_INTERVAL, 0.0)  # the final lr as a fraction of lr


@dataclass
class ExponentialSchedule:
    """Lecture 2's learning-rate finder: the lr moves geometrically from optim.lr to lr_end over the run."""

    name: str
    lr_end: float = ranged(POSITIVE_NUMBER, 1.0)


@dataclass(frozen=True)
class Preset:
    """An option of the `optim` or `schedule` group: its config class, with `values` over the class's defaults. An
    optimizer's option also picks its schedule, and the top-level keys (batch size, steps) it is meant for."""

    config: type
    values: dict = field(default_factory=dict)
    schedule: str | None = None
    run: dict = field(default_factory=dict)

    def node(self, name: str) -> dict:
        """The option's group node as Hydra composes it: its name, then each key in the class's order."""
        values = {**defaults_of(self.config), **self.values}
        return {"name": name, **{f.name: values[f.name] for f in fields(self.config) if f.name in values}}


# optim=<name>. Their schedules: sgd the lectures' step, full_batch the seed's constant (200 steps on the whole split).
OPTIMIZERS = {
    "adamw": Preset(AdamWConfig, schedule="cosine"),
    "sgd": Preset(SGDConfig, {"lr": 0.1}, schedule="step", run={"batch_size": 32}),
    "full_batch": Preset(
        SGDConfig,
        {"lr": 50.0},
        schedule="constant",
        run={"batch_size": None, "steps": 200, "eval_interval": 50, "log_interval": 10},
    ),
}

# schedule=<name>.
SCHEDULES = {
    "constant": Preset(ConstantSchedule),
    "step": Preset(StepSchedule),
    "cosine": Preset(WarmupSchedule, {"min_factor": 0.05}),
    "linear": Preset(WarmupSchedule),
    "exponential": Preset(ExponentialSchedule),
}


def optimizer_node(name: str) -> dict:
    """`optim=<name>`, a global node: its section, its schedule, and the run keys it sets."""
    preset = OPTIMIZERS[name]
    return {"defaults": [{"/schedule": preset.schedule}], "optim": preset.node(name), **preset.run}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weights and embeddings, not biases or norm gains (Bengio et al. 2003 decay weights only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not weight_decay:  # one group: each group costs a kernel launch per step
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_schedule(cfg, steps: int, base_lr: float) -> Callable[[int], float]:
    """The multiplier of the base lr at each step, for the `schedule` group's option. Reads the config once."""
    name = cfg.name
    if name == "constant":
        return lambda step: 1.0
    if name == "step":  # the lectures: lr, then lr * gamma after a fraction of the run
        decay_step, gamma = cfg.decay_at * steps, cfg.gamma
        return lambda step: gamma if step >= decay_step else 1.0
    if name == "exponential":  # lecture 2's lr finder: lr moves from optim.lr to lr_end over the run
        ratio, last = cfg.lr_end / base_lr, max(1, steps - 1)
        return lambda step: ratio ** (step / last)
    # cosine and linear: linear warmup, then down to min_factor along a half cosine or a straight line
    warmup, floor = int(cfg.warmup * steps), cfg.min_factor
    shape = (lambda t: 0.5 * (1 + math.cos(math.pi * t))) if name == "cosine" else (lambda t: 1 - t)

    def warmup_then_decay(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return floor + (1 - floor) * shape((step - warmup) / max(1, steps - warmup))

    return warmup_then_decay


def is_plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """SGD without momentum or weight decay: p -= lr * grad, nothing else."""
    return isinstance(optimizer, torch.optim.SGD) and all(
        g["momentum"] == 0 and g["weight_decay"] == 0 and not g["nesterov"] and not g["maximize"]
        for g in optimizer.param_groups
    )


def adamw_kernel(tensors: dict[str, list], lr: float, betas: tuple, eps: float, decay: float) -> None:
    """Fused AdamW over lists of tensors (param, grad, exp_avg, exp_avg_sq, step), their step counts already
    advanced: the call torch.optim.AdamW(fused=True).step makes."""
    torch._fused_adamw_(
        tensors["param"],
        tensors["grad"],
        tensors["exp_avg"],
        tensors["exp_avg_sq"],
        [],
        tensors["step"],
        amsgrad=False,
        lr=lr,
        beta1=betas[0],
        beta2=betas[1],
        weight_decay=decay,
        eps=eps,
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


def sgd_kernel(tensors: dict[str, list], lr: float, momentum: float, decay: float, dampening: float, first: bool):
    """Fused SGD over lists of tensors (param, grad, momentum_buffer): the call torch.optim.SGD(fused=True).step
    makes; `first`: the momentum buffers are filled, not updated."""
    torch._fused_sgd_(
        tensors["param"],
        tensors["grad"],
        tensors["momentum_buffer"] if momentum else [],
        weight_decay=decay,
        momentum=momentum,
        lr=lr,
        dampening=dampening,
        nesterov=False,
        maximize=False,
        is_first_step=first,
        grad_scale=None,
        found_inf=None,
    )


def fused_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """optimizer.step's kernels called directly, with its state kept where torch.optim keeps it (state_dict and
    checkpoints unchanged); for plain gradient descent one foreach update per group.

    torch.optim's step costs ~50 us of Python per call, as much as a small model's whole update (the lectures'
    SGD runs ~20% faster without it), and its first call imports torch._dynamo (~1 s of a short run's start).
    """
    if any(g.get(flag) for g in optimizer.param_groups for flag in ("nesterov", "maximize", "amsgrad", "foreach")):
        return optimizer.step  # options build_optimizer never sets: torch.optim's own step

    @torch.no_grad()
    def step() -> None:
        state = optimizer.state  # read at each step: load_state_dict replaces it
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:  # a group of no parameters (a model without biases), or none that took a gradient
                continue
            tensors = {"param": params, "grad": [p.grad for p in params]}
            if isinstance(optimizer, torch.optim.AdamW):
                for p in params:
                    if not state[p]:  # as torch.optim.AdamW(fused=True) starts a parameter's state
                        state[p]["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                        state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                for part in ("step", "exp_avg", "exp_avg_sq"):
                    tensors[part] = [state[p][part] for p in params]
                torch._foreach_add_(tensors["step"], 1)
                adamw_kernel(tensors, group["lr"], group["betas"], group["eps"], group["weight_decay"])
            elif group["momentum"] == 0 and group["weight_decay"] == 0:
                torch._foreach_add_(params, tensors["grad"], alpha=-group["lr"])
            else:
                buffers = [state[p].get("momentum_buffer") for p in params] if group["momentum"] else []
                first = bool(buffers) and all(b is None for b in buffers)
                tensors["momentum_buffer"] = [torch.empty_like(p) for p in params] if first else buffers
                sgd_kernel(tensors, group["lr"], group["momentum"], group["weight_decay"], group["dampening"], first)
                for p, buffer in zip(params, tensors["momentum_buffer"]):
                    state[p]["momentum_buffer"] = buffer

    return step


def skip_compile_guards() -> None:
    """torch.optim.Optimizer's methods (__init__, state_dict, ...) keep torch.compile out through wrappers that
    import torch._dynamo on their first call (~1 s of a run's start, ~3 s on a slow machine). Nothing here
    compiles: each wrapper is told that its function is already its own compile-disabled version."""
    guard = torch._disable_dynamo(lambda: None).__code__  # the wrapper's code, shared by every guarded method
    for method in vars(torch.optim.Optimizer).values():
        if getattr(method, "__code__", None) is guard:
            setattr(method.__wrapped__, "__dynamo_disable", method.__wrapped__)


def build_optimizer(
    model: nn.Module, cfg, schedule, steps: int
) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
    """The optimizer of the `optim` group (fused kernels) and the lr the `schedule` group gives each step.

    The lr is a pure function of the step, so a resumed run needs no scheduler state.
    """
    skip_compile_guards()
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    else:  # sgd and full_batch
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)
    base = float(cfg.lr)
    factor = lr_schedule(schedule, steps, base)
    return optimizer, lambda step: base * factor(step)
