"""Where a command's wall time goes before its first step and after its last: `mark(event)` appends the time of an
event to the file MAKEMORE_TIMELINE names, from any process of the command (`bench --startup` sets it and reads
the file back). Unset, a mark costs one look at the environment."""

from __future__ import annotations

import os
import time

VARIABLE = "MAKEMORE_TIMELINE"


def mark(event: str) -> None:
    """`event` happened now (the first of its name counts, over every process of the command)."""
    path = os.environ.get(VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as timeline:
            timeline.write(f"{time.time():.6f} {os.getpid()} {event}\n")


def read(path: str) -> dict[str, float]:
    """Each event's first time (seconds since the epoch) in a timeline file."""
    first: dict[str, float] = {}
    with open(path, encoding="utf-8") as timeline:
        for line in timeline:
            when, _, event = line.rstrip("\n").split(" ", 2)
            first[event] = min(first.get(event, float("inf")), float(when))
    return first
