"""Numeric helpers shared by metrics, judges and training logs.

`mean` makes every caller say what an empty input gives, because the right answer differs on
purpose: a round's aggregate logs 0.0 (a logged number never breaks a chart), a judge leaves the
metric out (None: "no readable verdict" is not "all wrong"), and a trainer's log reports NaN (a
quantity the trainer never logged).

The spread helpers (bootstrap over questions, paired bootstrap, Wilson where a rate sits at 0 or
1, Student t over replicates) say how far an evaluation number would move on another draw: with
200 questions one question is half a point of accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

Empty = TypeVar("Empty", float, None)


def mean(values: Iterable[float], *, empty: Empty) -> float | Empty:
    """The arithmetic mean, or `empty` when there are no values."""
    items = list(values)
    return sum(items) / len(items) if items else empty


def harmonic(x: float, y: float) -> float:
    """Harmonic mean of two non-negative numbers; 0.0 when both are 0 (RRP's combined score)."""
    return 2 * x * y / (x + y) if x + y > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# spread: how far a number would move on another draw of questions, samples or seeds


@dataclass(frozen=True)
class Paired:
    """A paired comparison: the mean per-question difference (A - B), its bootstrap interval and
    whether that interval excludes zero (the difference is not a draw of the noise)."""

    difference: float
    ci_low: float
    ci_high: float
    excludes_zero: bool
    n: int


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0.0 for fewer than two values (one seed has no spread
    to measure, and a logged number must not be NaN)."""
    n = len(values)
    if n < 2:
        return 0.0
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1))


def wilson_interval(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a rate k/n: unlike the normal one it stays inside [0, 1] and keeps
    a width at 0 or n successes, which a small eval set often reaches. n = 0 gives (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def edge_rate_interval(rate: float, questions: int) -> tuple[float, float] | None:
    """The interval of a rate that sits at exactly 0 or 1 over `questions` questions (None for
    any other rate): every resample of the questions repeats it, so a bootstrap interval has no
    width, while a new draw of questions could well hold one the model gets right (or wrong). The
    Wilson interval with each question one trial keeps that width: with 50 questions all wrong,
    up to 7%. No questions: (0, 1)."""
    if questions and 0.0 < rate < 1.0:
        return None
    return wilson_interval(rate * questions, questions)


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot resamples (with replacement) of n items, as an (n_boot, n) index array: one draw
    shared by every statistic computed on the same items keeps them jointly resampled."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """n_boot resamples of n items as (n_boot, n) counts (how often each item was drawn): a
    weighted sum `counts @ values` then gives every resample's total in one matrix product.
    The counts are those of n uniform draws per resample, tallied in one `bincount` (a
    multinomial draw per resample costs 20 times as long; the distribution is the same)."""
    draws = rng.integers(0, n, size=(n_boot, n))
    draws += n * np.arange(n_boot)[:, None]  # resample r counts into bins r*n .. r*n + n - 1
    return np.bincount(draws.ravel(), minlength=n * n_boot).reshape(n_boot, n).astype(float)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap draws (the percentile bootstrap)."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (one value per question: the unit
    that was drawn). Fewer than two values: the value itself, since nothing can be resampled."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return 0.0, 0.0
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    means = arr[bootstrap_indices(arr.size, n_boot, seed)].mean(axis=1)
    return percentile_interval(means, level)


def paired_bootstrap(
    diffs: Sequence[float] | Sequence[Sequence[float]],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Paired:
    """Paired bootstrap of per-question differences A - B on the same questions: resampling the
    questions keeps each question's two numbers together, so the question-to-question spread
    (some are easy for both) cancels and only the difference's own noise is left.

    A 2-D input (seed pairs x questions: the replicates of two sweep members, paired by seed) is
    resampled on both levels, seed pairs then questions, so training-seed noise counts too."""
    arr = np.asarray(diffs, dtype=float)
    if arr.size == 0:
        raise ValueError("paired_bootstrap: no shared questions to compare")
    if arr.ndim == 1:
        low, high = bootstrap_mean_ci(arr, n_boot, seed, level)
        n = arr.size
    else:
        low, high = percentile_interval(_two_level_means(arr, n_boot, seed), level)
        n = arr.shape[1]
    return Paired(
        difference=float(arr.mean()),
        ci_low=low,
        ci_high=high,
        excludes_zero=low > 0 or high < 0,
        n=int(n),
    )


def _two_level_means(arr: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of (rows x columns) `arr` over n_boot resamples of rows, then of columns."""
    rows, cols = arr.shape
    rng = np.random.default_rng(seed)
    col_counts = resample_counts(rng, cols, n_boot)  # (B x cols)
    row_counts = resample_counts(rng, rows, n_boot)  # (B x rows)
    per_row = col_counts @ arr.T  # (B x rows): each row's resampled column sum
    return (row_counts * per_row).sum(axis=1) / (rows * cols)


# two-sided 97.5% Student t quantiles by degrees of freedom (no scipy here); 1.96 beyond 30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% Student t interval of the mean of a few replicates (seeds of one sweep member: the
    replicate is the unit, and with three of them t = 4.3, not 1.96); None for fewer than two."""
    n = len(values)
    if n < 2:
        return None
    mu = sum(values) / n
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * std(values) / math.sqrt(n)
    return mu - half, mu + half
