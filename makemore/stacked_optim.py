"""The stacked optimizer: every member of a population stepped by its own solo optimizer's kernels, on its own
slices of the stacked tensors (makemore.stacked), so its parameters stay equal to its solo run's."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from makemore.optim import adamw_kernel, sgd_kernel
from makemore.stacked import StackedEngine


class StackedOptimizer:
    """Every member's optimizer as its solo run builds it (makemore.optim.build_optimizer: its param groups and
    hyperparameters), stepped on the member's own slices with the kernels that optimizer runs: fused AdamW, fused
    SGD, or for plain gradient descent one add per tensor (makemore.optim.fused_step). Members whose groups share
    their numbers at a step take one call together. The state lives stacked, like the parameters."""

    def __init__(self, engine: StackedEngine, optimizers: list[torch.optim.Optimizer], models: list[nn.Module]):
        self.engine = engine
        self.kind = "adamw" if isinstance(optimizers[0], torch.optim.AdamW) else "sgd"
        self.groups = []  # per member: [(hyperparameters, [names])]
        for optimizer, model in zip(optimizers, models):
            names = {id(p): name for name, p in model.named_parameters()}
            groups = [(group, [names[id(p)] for p in group["params"]]) for group in optimizer.param_groups]
            self.groups.append([(group, names) for group, names in groups if names])  # torch skips an empty group
        like = engine.params
        if self.kind == "adamw":
            self.state = {
                "exp_avg": {name: torch.zeros_like(p) for name, p in like.items()},
                "exp_avg_sq": {name: torch.zeros_like(p) for name, p in like.items()},
            }
            device = next(iter(like.values())).device  # fused AdamW keeps its counts where its parameters are
            self.counts = torch.zeros(len(optimizers), len(like), device=device)  # its float32 step, per tensor
        else:
            self.state = {"momentum_buffer": {name: torch.zeros_like(p) for name, p in like.items()}}
            self.started = [False] * len(optimizers)  # momentum buffers exist after a member's first step
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

    def plain(self, group: dict) -> bool:
        return self.kind == "sgd" and group["momentum"] == 0 and group["weight_decay"] == 0

    def key(self, k: int, group: dict) -> tuple:
        """What a call shares besides the learning rate: the kernel and its numbers."""
        if self.kind == "adamw":
            return ("adamw", *group["betas"], group["eps"], group["weight_decay"])
        if self.plain(group):
            return ("plain",)
        return ("sgd", group["momentum"], group["weight_decay"], group["dampening"], not self.started[k])

    def tensors(self, entries: tuple[tuple[int, int], ...]) -> dict[str, list]:
        """The tensors of these (member, group) pairs, by part. Plain descent over every member's every parameter
        takes the stacked tensors whole: its add is the same for an element wherever it lies in a tensor."""
        if entries in self.lists:
            return self.lists[entries]
        engine = self.engine
        whole = len(entries) == engine.size and all(len(self.groups[k]) == 1 for k, _ in entries)
        if whole and self.plain(self.groups[0][0][0]):
            lists = {"param": [engine.params[n].detach() for n in engine.names], "grad": list(engine.grads.values())}
        else:
            pairs = [(k, name) for k, g in entries for name in self.groups[k][g][1]]
            lists = {part: [self.views[k][part][name] for k, name in pairs] for part in self.views[0]}
            if self.kind == "adamw":
                lists["step"] = [self.counts[k, engine.names.index(name)] for k, name in pairs]
        self.lists[entries] = lists
        return lists

    @torch.no_grad()
    def step(self, rates: list[tuple[float, tuple[int, ...]]]) -> None:
        """One step of every member: `rates` pairs each learning rate with the members that take it."""
        if self.kind == "adamw":
            self.counts.add_(1)  # every member steps every step: one add for all of fused AdamW's counts
        for lr, members in rates:
            for (kind, *numbers), entries in self.plan(members).items():
                self.call(kind, numbers, lr, self.tensors(entries))
                if kind == "sgd":
                    for k, _ in entries:
                        self.started[k] = True

    def plan(self, members: tuple[int, ...]) -> dict[tuple, tuple[tuple[int, int], ...]]:
        """The calls that step these members at one learning rate: (member, group) pairs by what a call shares,
        made once per set of members (and again while SGD's momentum buffers are first filled)."""
        key = (members, tuple(self.started[k] for k in members) if self.kind == "sgd" else ())
        if key not in self.plans:
            calls: dict[tuple, list] = defaultdict(list)
            for k in members:
                for g, (group, _) in enumerate(self.groups[k]):
                    calls[self.key(k, group)].append((k, g))
            self.plans[key] = {call: tuple(entries) for call, entries in calls.items()}
        return self.plans[key]

    def call(self, kind: str, numbers: list, lr: float, tensors: dict[str, list]) -> None:
        """One optimizer kernel over the tensors of the members and groups that share its numbers."""
        if kind == "adamw":
            beta1, beta2, eps, decay = numbers
            adamw_kernel(tensors, lr, (beta1, beta2), eps, decay)
        elif kind == "plain":
            torch._foreach_add_(tensors["param"], tensors["grad"], alpha=-lr)
        else:
            momentum, decay, dampening, first = numbers
            sgd_kernel(tensors, lr, momentum, decay, dampening, first)

    def keep(self, members: list[int]) -> None:
        index = torch.tensor(members)
        for state in self.state.values():
            for name in state:
                state[name] = state[name].index_select(0, index.to(state[name].device))
        if self.kind == "adamw":
            self.counts = self.counts[index]
        else:
            self.started = [self.started[k] for k in members]
        self.groups = [self.groups[k] for k in members]
        self.slices()

    def state_dict(self, k: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
        """Member k's optimizer state in torch.optim's own format, as its solo run would save it: a checkpoint that
        makemore.loop.fit resumes as well as a population does."""
        self.load_into(k, optimizer, model)
        return optimizer.state_dict()

    def load_into(self, k: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Copy member k's state into its solo optimizer (`optimizer`, built on `model`)."""
        for name, p in model.named_parameters():
            if self.kind == "adamw":
                optimizer.state[p] = {
                    "step": self.counts[k, self.engine.names.index(name)].clone(),
                    "exp_avg": self.views[k]["exp_avg"][name].clone(),
                    "exp_avg_sq": self.views[k]["exp_avg_sq"][name].clone(),
                }
            elif self.started[k] and any(not self.plain(g) for g, _ in self.groups[k]):
                optimizer.state[p] = {"momentum_buffer": self.views[k]["momentum_buffer"][name].clone()}

    def load_from(self, k: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Take member k's state from its solo optimizer (after optimizer.load_state_dict(checkpoint))."""
        for name, p in model.named_parameters():
            state = optimizer.state.get(p, {})
            if self.kind == "adamw" and state:
                self.counts[k, self.engine.names.index(name)] = state["step"]
                self.views[k]["exp_avg"][name].copy_(state["exp_avg"])
                self.views[k]["exp_avg_sq"][name].copy_(state["exp_avg_sq"])
            elif state.get("momentum_buffer") is not None:
                self.views[k]["momentum_buffer"][name].copy_(state["momentum_buffer"])
                self.started[k] = True
