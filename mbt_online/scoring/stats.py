"""Numeric helpers shared by metrics, judges and training logs.

`mean` makes every caller say what an empty input gives, because the right answer differs on
purpose: a round's aggregate logs 0.0 (a logged number never breaks a chart), a judge leaves the
metric out (None: "no readable verdict" is not "all wrong"), and a trainer's log reports NaN (a
quantity the trainer never logged).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

Empty = TypeVar("Empty", float, None)


def mean(values: Iterable[float], *, empty: Empty) -> float | Empty:
    """The arithmetic mean, or `empty` when there are no values."""
    items = list(values)
    return sum(items) / len(items) if items else empty


def harmonic(x: float, y: float) -> float:
    """Harmonic mean of two non-negative numbers; 0.0 when both are 0 (RRP's combined score)."""
    return 2 * x * y / (x + y) if x + y > 0 else 0.0
