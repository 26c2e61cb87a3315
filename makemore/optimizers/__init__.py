"""Optimizers: one module per optimizer, each a family (makemore.optimizers.family.Optimizer) beside its config,
registered as `optim` options above its class. A family's update is written once, over lists of tensors; a run
alone takes it on its model's parameters (solo_step), a population on each member's own slices of the stacked
tensors (makemore.optimizers.stacked). A new optimizer is one module here and its line below; a user's own is a
subclass of Optimizer anywhere on the path, named by `optim._target_`.
"""

# ruff: noqa: I001  (the families in the order their options are listed)
from makemore.optimizers.family import (
    OPTIONS,
    Optimizer,
    SoloOptimizer,
    build_optimizer,
    family_of,
    param_groups,
    register,
    skip_compile_guards,
    solo_step,
    user_family,
)
from makemore.optimizers.adamw import AdamW
from makemore.optimizers.sgd import SGD, is_plain_sgd
from makemore.optimizers.lion import Lion

__all__ = [
    "OPTIONS",
    "SGD",
    "AdamW",
    "Lion",
    "Optimizer",
    "SoloOptimizer",
    "build_optimizer",
    "family_of",
    "is_plain_sgd",
    "param_groups",
    "register",
    "skip_compile_guards",
    "solo_step",
    "user_family",
]
