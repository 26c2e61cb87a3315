"""Training features: what the training loop (makemore.loop) does beyond its own decisions, each written once for
K members at once, so that it acts alike in a run alone (K = 1) and in a population (K > 1).

A feature is built for a loop whose members ask for it (`wanted`), and is called at each phase of a step and
point. The loop lists the features it builds (makemore.loop.FEATURES); the weight average (ema_decay) is one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from makemore.settings import Settings


class Feature:
    """A training feature: its hooks, each a no-op until a feature gives it a body."""

    # a history column the pruner judges instead of loss/dev, where the feature logs one at an evaluation
    judged: ClassVar[str | None] = None

    @staticmethod
    def wanted(settings: Settings) -> bool:
        """Whether a member with these settings asks for the feature."""
        raise NotImplementedError

    def __init__(self, loop: Any) -> None:
        """Built once the loop (makemore.loop.Loop) holds its members, engine and optimizer, before the first step
        (a resumed member's checkpoint is its `resume`)."""
        self.loop = loop

    def before_update(self) -> None:
        """Every active member's gradients are computed (loop.engine.member_grads) and not yet applied."""

    def after_update(self) -> None:
        """Every active member has taken its step."""

    def evaluated(self, positions: list[int]) -> dict[int, dict[str, float]]:
        """At an evaluation of the members at these positions: what each one's row adds, by position."""
        return {}

    def saved(self, position: int) -> dict:
        """What the checkpoint of the member at this position keeps of the feature, by checkpoint key."""
        return {}

    def keep(self, positions: list[int]) -> None:
        """Only the members at these positions go on, in this order."""
