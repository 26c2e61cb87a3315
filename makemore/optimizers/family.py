"""What an optimizer is: a family with its config, the state it keeps per parameter and its update over lists of
tensors; the `optim` group's options registered beside each family; and the solo step, which runs that update on
one model's parameters.

A population's members are stepped by the same update on their own slices of the stacked tensors
(makemore.optimizers.stacked): one update, written once per optimizer, is what keeps a member's numbers equal to
its solo run's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from makemore.errors import MakemoreError
from makemore.fields import defaults_of
from makemore.schedules import learning_rates
from makemore.targets import import_target


class Optimizer:
    """An optimizer family. A subclass is one optimizer, registered as `optim=<name>` options above it (a user's
    own, anywhere on the path, is named by `optim._target_` instead):

    - `Config`: its options' keys, defaults and ranges (a dataclass whose first field is `name`);
    - `build`: the torch.optim object a run keeps (its param groups, its hyperparameters, and its state, whose
      state_dict is what a checkpoint holds);
    - `state_of`: the tensors it keeps per parameter, shaped like it and zero before the first step; `counts`:
      whether it also keeps torch's float32 step count per parameter, advanced before each update;
    - `shares`: the numbers of a param group besides the lr, which members stepped in one call must share;
    - `update`: one step over lists of tensors, by part (`param`, `grad`, each state's name, `step`), at one lr.

    A family that leaves `update` unwritten steps a solo run with its torch.optim object's own step, and its
    population members run alone (the plan line says so): a population never substitutes another update.
    """

    Config: ClassVar[type]
    counts: ClassVar[bool] = False

    @classmethod
    def stacks(cls) -> bool:
        """Whether it has an update of its own, which a population can run on stacked members."""
        return cls.update is not Optimizer.update

    @staticmethod
    def build(groups: list[dict], cfg: Any) -> torch.optim.Optimizer:
        raise NotImplementedError

    @staticmethod
    def state_of(group: dict) -> tuple[str, ...]:
        return ()

    @staticmethod
    def shares(group: dict) -> tuple:
        return ()

    @staticmethod
    def takes_whole(group: dict) -> bool:
        """Whether its update of an element is the same wherever the element lies, with no state: then one call
        may take the members' stacked tensors whole."""
        return False

    @staticmethod
    def update(tensors: dict[str, list[torch.Tensor]], lr: float, group: dict, first: bool) -> None:
        """One step of these tensors at learning rate `lr`; `first`: their first step (their state is zeros)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Option:
    """One option of the `optim` group: its family, `values` over the family's config defaults, the schedule it
    trains with, and the top-level keys (batch size, steps) it is meant for."""

    family: type[Optimizer]
    values: dict
    schedule: str
    run: dict = field(default_factory=dict)

    def node(self, name: str) -> dict:
        """`optim=<name>`, a global node: its schedule, its section (name first, then each key in the config's
        order), and the run keys it sets."""
        values = {**defaults_of(self.family.Config), **self.values}
        section = {"name": name, **{f.name: values[f.name] for f in fields(self.family.Config) if f.name in values}}
        return {"defaults": [{"/schedule": self.schedule}], "optim": section, **self.run}


# The built-in optimizers by option name, in the order they register (makemore.optimizers imports the families).
OPTIONS: dict[str, Option] = {}


def register(
    name: str, schedule: str, run: dict | None = None, **values: Any
) -> Callable[[type[Optimizer]], type[Optimizer]]:
    """Class decorator: the family becomes `optim=<name>`, with `values` over its config's defaults."""

    def add(family: type[Optimizer]) -> type[Optimizer]:
        OPTIONS[name] = Option(family, values, schedule, run or {})
        return family

    return add


def family_of(cfg: Any) -> type[Optimizer]:
    """The family of an `optim` section: a user's own class where it names one (`_target_`), else the built-in
    option's."""
    target = cfg.get("_target_")
    return user_family(target) if target else OPTIONS[cfg.name].family


def user_family(target: str) -> type[Optimizer]:
    """A user's own optimizer family, named by `optim._target_` (module.Class): a subclass of Optimizer."""
    try:
        family = import_target(target)
    except (ImportError, AttributeError) as e:
        raise MakemoreError(
            f"optim._target_={target} cannot be imported ({e}); put its module on PYTHONPATH (PYTHONPATH=. python ...)"
        ) from None
    if not (isinstance(family, type) and issubclass(family, Optimizer)):
        raise MakemoreError(
            f"optim._target_={target} is not an optimizer family: make it a subclass of makemore.optimizers.Optimizer "
            "(its Config, build and update)"
        )
    return family


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weights and embeddings, not biases or norm gains (Bengio et al. 2003 decay weights only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not weight_decay:  # one group: each group costs a kernel launch per step
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def skip_compile_guards() -> None:
    """torch.optim.Optimizer's methods (__init__, state_dict, ...) keep torch.compile out through wrappers that
    import torch._dynamo on their first call (~1 s of a run's start, ~3 s on a slow machine). Nothing here
    compiles: each wrapper is told that its function is already its own compile-disabled version."""
    guard = torch._disable_dynamo(lambda: None).__code__  # the wrapper's code, shared by every guarded method
    for method in vars(torch.optim.Optimizer).values():
        if getattr(method, "__code__", None) is guard:
            setattr(method.__wrapped__, "__dynamo_disable", method.__wrapped__)


def build_optimizer(
    model: nn.Module, cfg: Any, schedule: Any, steps: int
) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
    """The `optim` section's optimizer on the model's parameters, and the lr the `schedule` section gives each step."""
    skip_compile_guards()
    optimizer = family_of(cfg).build(param_groups(model, cfg.weight_decay), cfg)
    return optimizer, learning_rates(cfg, schedule, steps)


def fresh_state(family: type[Optimizer], group: dict, p: torch.Tensor) -> dict:
    """A parameter's state before its first step, as torch.optim's fused optimizers start it."""
    state = {"step": torch.zeros((), dtype=torch.float32, device=p.device)} if family.counts else {}
    return {
        **state,
        **{name: torch.zeros_like(p, memory_format=torch.preserve_format) for name in family.state_of(group)},
    }


def solo_step(optimizer: torch.optim.Optimizer, family: type[Optimizer]) -> Callable[[], None]:
    """One model's optimizer step: its family's update on each param group's tensors, at the group's lr, with its
    state kept where torch.optim keeps it (state_dict and checkpoints unchanged).

    torch.optim's step costs ~50 us of Python per call, as much as a small model's whole update (the lectures'
    SGD runs ~20% faster without it), and its first call imports torch._dynamo (~1 s of a short run's start).
    """
    options = ("nesterov", "maximize", "amsgrad", "foreach")  # what build never sets: torch.optim's own step
    if not family.stacks() or any(g.get(flag) for g in optimizer.param_groups for flag in options):
        return optimizer.step

    @torch.no_grad()
    def step() -> None:
        state = optimizer.state  # read at each step: load_state_dict replaces it
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:  # a group of no parameters (a model without biases), or none that took a gradient
                continue
            first = not state.get(params[0])  # state is a defaultdict: indexing it would add an empty entry
            if first:
                for p in params:
                    if fresh := fresh_state(family, group, p):  # plain SGD keeps none, as torch's
                        state[p] = fresh
            tensors = {"param": params, "grad": [p.grad for p in params]}
            for part in family.state_of(group) + (("step",) if family.counts else ()):
                tensors[part] = [state[p][part] for p in params]
            if family.counts:
                torch._foreach_add_(tensors["step"], 1)
            family.update(tensors, group["lr"], group, first)

    return step


class SoloOptimizer:
    """A run's own optimizer as the training loop steps it: the torch.optim object (groups, state, checkpoint
    format) and its family's update on the model's tensors. Its one member is position 0."""

    def __init__(self, optimizer: torch.optim.Optimizer, family: type[Optimizer]):
        self.optimizer, self.groups = optimizer, optimizer.param_groups
        self.update = solo_step(optimizer, family)

    def step(self, rates: list[tuple[float, tuple[int, ...]]]) -> None:
        lr = rates[0][0]
        for group in self.groups:
            group["lr"] = lr
        self.update()

    def state_dict(self, position: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
        return self.optimizer.state_dict()

    def keep(self, positions: list[int]) -> None:
        """A run alone has nobody to drop."""
