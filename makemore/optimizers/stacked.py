"""The stacked optimizer: every member of a population stepped by its family's update (the one its solo run
takes: makemore.optimizers.family.solo_step), on its own slices of the stacked tensors (makemore.stacked), so its
parameters stay equal to its solo run's."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from makemore.optimizers.family import Optimizer
from makemore.stacked import StackedEngine


class StackedOptimizer:
    """Every member's optimizer as its solo run builds it (makemore.optimizers.build_optimizer: its param groups
    and hyperparameters), stepped by its family's update on the member's own slices. Members whose groups share
    their numbers at a step take one call together. The state lives stacked, like the parameters."""

    def __init__(
        self,
        engine: StackedEngine,
        optimizers: list[torch.optim.Optimizer],
        models: list[nn.Module],
        family: type[Optimizer],
    ):
        self.engine, self.family = engine, family
        self.groups = []  # per member: [(hyperparameters, [names])]
        for optimizer, model in zip(optimizers, models):
            names = {id(p): name for name, p in model.named_parameters()}
            groups = [(group, [names[id(p)] for p in group["params"]]) for group in optimizer.param_groups]
            self.groups.append([(group, names) for group, names in groups if names])  # torch skips an empty group
        like = engine.params
        parts = {part for member in self.groups for group, _ in member for part in family.state_of(group)}
        self.state = {part: {name: torch.zeros_like(p) for name, p in like.items()} for part in sorted(parts)}
        if family.counts:  # torch keeps a float32 step per tensor, where its parameters are
            device = next(iter(like.values())).device
            self.counts = torch.zeros(len(optimizers), len(like), device=device)
        self.started = [False] * len(optimizers)  # a member's state is zeros until its first step
        self.slices()

    def slices(self) -> None:
        """Each member's views of the stacked tensors, made once (and again after `keep`), and the lists of tensors a
        call takes, made once per set of members that share it."""
        engine = self.engine
        self.views = [
            {
                "param": {name: engine.params[name].detach()[k] for name in engine.names},
                "grad": {name: engine.grads[name][k] for name in engine.names},
                **{part: {name: t[k] for name, t in state.items()} for part, state in self.state.items()},
            }
            for k in range(engine.size)
        ]
        self.lists: dict[tuple, dict[str, list]] = {}
        self.plans: dict[tuple, dict] = {}

    def tensors(self, entries: tuple[tuple[int, int], ...]) -> dict[str, list]:
        """The tensors of these (member, group) pairs, by part. An update the family takes whole, over every
        member's every parameter, takes the stacked tensors whole."""
        if entries in self.lists:
            return self.lists[entries]
        engine, family = self.engine, self.family
        whole = len(entries) == engine.size and all(len(self.groups[k]) == 1 for k, _ in entries)
        if whole and family.takes_whole(self.groups[0][0][0]):
            lists = {"param": [engine.params[n].detach() for n in engine.names], "grad": list(engine.grads.values())}
        else:
            pairs = [(k, g, name) for k, g in entries for name in self.groups[k][g][1]]
            parts = ("param", "grad", *family.state_of(self.groups[entries[0][0]][entries[0][1]][0]))
            lists = {part: [self.views[k][part][name] for k, _, name in pairs] for part in parts}
            if family.counts:
                lists["step"] = [self.counts[k, engine.names.index(name)] for k, _, name in pairs]
        self.lists[entries] = lists
        return lists

    @torch.no_grad()
    def step(self, rates: list[tuple[float, tuple[int, ...]]]) -> None:
        """One step of every member: `rates` pairs each learning rate with the members that take it."""
        if self.family.counts:
            self.counts.add_(1)  # every member steps every step: one add for all of the step counts
        for lr, members in rates:
            for (first, *_), entries in self.plan(members).items():
                k, g = entries[0]
                self.family.update(self.tensors(entries), lr, self.groups[k][g][0], first)
            for k in members:
                self.started[k] = True

    def plan(self, members: tuple[int, ...]) -> dict[tuple, tuple[tuple[int, int], ...]]:
        """The calls that step these members at one learning rate: (member, group) pairs by what a call shares,
        made once per set of members (and again while their first step is taken)."""
        key = (members, tuple(self.started[k] for k in members))
        if key not in self.plans:
            calls: dict[tuple, list] = defaultdict(list)
            for k in members:
                for g, (group, _) in enumerate(self.groups[k]):
                    calls[(not self.started[k], *self.family.shares(group))].append((k, g))
            self.plans[key] = {call: tuple(entries) for call, entries in calls.items()}
        return self.plans[key]

    def keep(self, members: list[int]) -> None:
        index = torch.tensor(members)
        for state in self.state.values():
            for name in state:
                state[name] = state[name].index_select(0, index.to(state[name].device))
        if self.family.counts:
            self.counts = self.counts[index.to(self.counts.device)]
        self.started = [self.started[k] for k in members]
        self.groups = [self.groups[k] for k in members]
        self.slices()

    def state_dict(self, k: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
        """Member k's optimizer state in torch.optim's own format, as its solo run would save it: a checkpoint that
        a run alone resumes as well as a population does."""
        self.load_into(k, optimizer, model)
        return optimizer.state_dict()

    def load_into(self, k: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Copy member k's state into its solo optimizer (`optimizer`, built on `model`)."""
        if not self.started[k]:
            return
        names = {id(p): name for name, p in model.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = names[id(p)]
                state = {part: self.views[k][part][name].clone() for part in self.family.state_of(group)}
                if self.family.counts:
                    state["step"] = self.counts[k, self.engine.names.index(name)].clone()
                if state:
                    optimizer.state[p] = state

    def load_from(self, k: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Take member k's state from its solo optimizer (after optimizer.load_state_dict(checkpoint))."""
        for name, p in model.named_parameters():
            state = optimizer.state.get(p, {})
            for part, value in state.items():
                if part == "step":
                    self.counts[k, self.engine.names.index(name)] = value
                elif value is not None:
                    self.views[k][part][name].copy_(value)
            self.started[k] = self.started[k] or bool(state)
