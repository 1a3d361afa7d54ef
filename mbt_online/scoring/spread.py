"""How far each evaluation metric would move on another draw: the 95% interval that goes beside
every `eval/` number when an evaluation repeats over seeds (`eval.sampling.seeds`).

Every interval answers one question: how far the number would move on another draw of questions
and of their samples. So every metric, a rate (accuracy, EM, degeneration, ...) as much as mean
tokens, F1, the ratios, AES and MQI, gets a percentile bootstrap over **questions**: the question
is the unit that was drawn, and its samples and seeds are not independent of each other (an
impossible question is wrong on every seed), so counting every trial as its own draw (a Wilson
interval over the pooled trials) is too narrow for new questions. A question's resampled sums
carry its samples' own noise, so the interval holds both.

Each metric is recomputed from per-question sums on every resample, so the ratios (tokens per
correct answer, answer-inclusive share) and AES / MQI are resampled jointly with their parts.
Per-tier and per-benchmark keys (`eval/<label>/<metric>`) get the same on their own questions.
A rate at exactly 0 or 1 repeats itself on every resample; it gets the Wilson interval over its
questions instead (`stats.edge_rate_interval`), which keeps a width.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from mbt_online.config import Config
from mbt_online.scoring.metrics import aes, mqi, mqi_level
from mbt_online.scoring.stats import edge_rate_interval, percentile_interval, resample_counts

# rate metric -> its per-trace 0/1 column
RATES = {
    "accuracy": "correct",
    "cover_substring": "cover_substring",
    "em": "em",
    "degeneration_rate": "truncated",
    "answer_inclusive_rate": "answer_inclusive_error",
    "format_rate": "has_answer_tag",
}
# mean metric -> its per-trace column
MEANS = {
    "mean_tokens": "tokens",
    "f1": "f1",
    "repetition": "repetition",
    "redundancy": "redundancy",
    "rrp": "rrp",
    "mqi_level": "mqi_level",
}
# ratio metric -> (numerator column, denominator column, value when the denominator is 0)
RATIOS = {
    "tokens_per_correct": ("tokens_correct", "correct_n", 0.0),
    "answer_inclusive_share": ("answer_inclusive_error", "wrong", 0.0),
    "first_reach": ("first_reach", "reached", 1.0),
}
COLUMNS = (
    "count",
    *RATES.values(),
    *(c for c in MEANS.values() if c not in RATES.values()),
    "tokens_correct",
    "correct_n",
    "wrong",
    "reached",
    "first_reach",
)
COL = {name: i for i, name in enumerate(dict.fromkeys(COLUMNS))}
N_BOOT = 1000
BOOT_SEED = 0  # fixed: a resumed round must log the same interval


def trace_columns(row: dict[str, Any]) -> np.ndarray:
    """One scored eval row as the per-trace values every metric is built from."""
    d = json.loads(row["diagnostics"])
    correct = float(d["correct"])
    values = {
        "count": 1.0,
        "correct": correct,
        "cover_substring": float(d.get("cover_substring", 0.0)),
        "em": float(d["em"]),
        "truncated": float(d["truncated"]),
        "answer_inclusive_error": float(d["answer_inclusive_error"]),
        "has_answer_tag": float(d["has_answer_tag"]),
        "tokens": float(d["tokens"]),
        "f1": float(d["f1"]),
        "repetition": float(d["repetition"]),
        "redundancy": float(d["redundancy"]),
        "rrp": float(d["rrp"]),
        "mqi_level": float(mqi_level(d["phases"])),
        "tokens_correct": float(d["tokens"]) if correct > 0 else 0.0,
        "correct_n": float(correct > 0),
        "wrong": float(correct == 0.0),
        "reached": float(d["first_reach"] is not None),
        "first_reach": float(d["first_reach"] or 0.0),
    }
    out = np.zeros(len(COL))
    for name, i in COL.items():
        out[i] = values[name]
    return out


def question_sums(rows: list[dict[str, Any]]) -> np.ndarray:
    """(questions x columns): each question's sums over its samples and seeds."""
    index: dict[str, int] = {}
    sums: list[np.ndarray] = []
    for row in rows:
        i = index.setdefault(row["example_id"], len(index))
        if i == len(sums):
            sums.append(np.zeros(len(COL)))
        sums[i] += trace_columns(row)
    return np.array(sums) if sums else np.zeros((0, len(COL)))


def _ratio(s: np.ndarray, num: str, den: str, empty: float) -> np.ndarray:
    d = s[:, COL[den]]
    return np.where(d > 0, s[:, COL[num]] / np.where(d > 0, d, 1.0), empty)


def metric_functions(cfg: Config, base: tuple[float, float] | None) -> dict[str, Callable]:
    """Each metric as a function of summed columns (rows: resamples). AES and MQI are relative
    to round 0's (accuracy, mean tokens); without it (round 0 itself) the resample is its own
    baseline, as in `summarize`."""
    fns: dict[str, Callable] = {m: _col_mean(c) for m, c in (*RATES.items(), *MEANS.items())}
    fns.update({m: _col_ratio(*spec) for m, spec in RATIOS.items()})

    def base_of(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if base is None:
            return _ratio(s, "correct", "count", 0.0), _ratio(s, "tokens", "count", 0.0)
        return np.full(len(s), base[0]), np.full(len(s), base[1])

    def aes_of(s: np.ndarray) -> np.ndarray:
        acc, tok = _ratio(s, "correct", "count", 0.0), _ratio(s, "tokens", "count", 0.0)
        b_acc, b_tok = base_of(s)
        a = cfg.aes
        return np.array([aes(*v, a.a, a.b, a.c) for v in zip(acc, tok, b_acc, b_tok, strict=True)])

    def mqi_of(s: np.ndarray) -> np.ndarray:
        level, tok = _ratio(s, "mqi_level", "count", 0.0), _ratio(s, "tokens", "count", 0.0)
        b_tok = base_of(s)[1]
        return np.array([mqi(*v) for v in zip(level, b_tok, tok, strict=True)])

    fns.update(aes=aes_of, mqi=mqi_of)
    return fns


def _col_mean(col: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: _ratio(s, col, "count", 0.0)


def _col_ratio(num: str, den: str, empty: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: _ratio(s, num, den, empty)


def intervals(
    rows: list[dict[str, Any]],
    metrics: list[str],
    fns: dict[str, Callable],
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> dict[str, tuple[float, float]]:
    """metric -> 95% interval over `rows` (all seeds pooled), for each metric with a known kind."""
    return sum_intervals(question_sums(rows), metrics, fns, n_boot, seed)


def sum_intervals(
    sums: np.ndarray,
    metrics: list[str],
    fns: dict[str, Callable],
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> dict[str, tuple[float, float]]:
    """metric -> 95% percentile-bootstrap interval over the questions whose sums are the rows of
    `sums` (`question_sums`); a rate at 0 or 1, or of no question, gets `edge_rate_interval`."""
    out: dict[str, tuple[float, float]] = {}
    boot = [m for m in metrics if m in fns]
    q = len(sums)
    if boot and q:
        counts = resample_counts(np.random.default_rng(seed), q, n_boot)
        # (n_boot x columns): every metric from the same resamples; one matrix-vector product
        # per column, since a matrix product of this shape starts BLAS's thread pool, which on
        # a busy machine costs ten times the arithmetic
        resampled = np.stack([counts @ sums[:, j] for j in range(sums.shape[1])], axis=1)
        for m in boot:
            out[m] = percentile_interval(fns[m](resampled))
    total = sums.sum(axis=0) if q else np.zeros(len(COL))
    for m in (m for m in metrics if m in RATES):
        k, n = total[COL[RATES[m]]], total[COL["count"]]
        edge = edge_rate_interval(float(k / n) if n else 0.0, q)
        if edge is not None:
            out[m] = edge
    return out


def eval_intervals(
    rows: list[dict[str, Any]],
    keys: list[str],
    cfg: Config,
    base: tuple[float, float] | None,
    prefix: str = "eval",
) -> dict[str, tuple[float, float]]:
    """`<prefix>/<metric>` and `<prefix>/<label>/<metric>` (a tier or a benchmark) -> interval."""
    fns = metric_functions(cfg, base)
    wanted: dict[str, list[str]] = {}  # label ("" = all rows) -> metrics
    for key in keys:
        parts = key.removeprefix(f"{prefix}/").split("/")
        if key.startswith(f"{prefix}/") and len(parts) in (1, 2):
            label, metric = ("", parts[0]) if len(parts) == 1 else parts
            wanted.setdefault(label, []).append(metric)
    out: dict[str, tuple[float, float]] = {}
    for label, metrics in wanted.items():
        subset = (
            rows if not label else [r for r in rows if label in (r.get("tier"), r.get("source"))]
        )
        for m, ci in intervals(subset, metrics, fns).items():
            out[f"{prefix}/{label}/{m}" if label else f"{prefix}/{m}"] = ci
    return out
