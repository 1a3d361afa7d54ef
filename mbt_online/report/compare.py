"""Seeds merged and members compared: is one run (or sweep member) better than another, or is the
difference a draw of the noise?

A sweep with `seeds: [..]` names its replicates `<member>-s<seed>` (`sweeps.spec.with_seeds`);
`group_of` reads the member back and `merge_seeds` turns the replicates' metric lines into one
series with an interval per round (the report and `compare` use it). `paired_compare` tests two
runs, or two groups of replicates paired by seed, on the held-out questions they share: a paired
bootstrap of the per-question differences (`scoring.stats.paired_bootstrap`).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mbt_online.config import ConfigError, load_config
from mbt_online.rundir import load_rows, read_metrics, stage_dir
from mbt_online.scoring.spread import COL, MEANS, RATES, trace_columns
from mbt_online.scoring.stats import (
    bootstrap_mean_ci,
    edge_rate_interval,
    paired_bootstrap,
    std,
    t_interval,
)

SEED_SUFFIX = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")
# spread keys of the runs' own lines: replaced by the spread over the merged runs
SPREAD_SUFFIXES = ("_std", "_ci_low", "_ci_high", "_n")
METRICS = (*RATES, *MEANS, "reward")


def group_of(name: str) -> str:
    """A sweep replicate's member name: `mbt-r-s2` -> `mbt-r`; other names unchanged."""
    m = SEED_SUFFIX.match(name)
    return m.group("group") if m else name


def seed_of(name: str) -> int | None:
    """A sweep replicate's seed (`mbt-r-s2` -> 2), None for a name without the suffix."""
    m = SEED_SUFFIX.match(name)
    return int(m.group("seed")) if m else None


def merge_seeds(runs_rows: list[list[dict]]) -> list[dict]:
    """The metric lines of a member's replicates as one line per round: for every numeric key
    `<key>` (the mean over the runs that reached the round), `<key>_std`, `<key>_n` (runs) and,
    from two runs on, `<key>_ci_low` / `<key>_ci_high` (a 95% t interval over the runs: the
    replicate, with its own training noise, is the unit)."""
    by_round: dict[int, list[dict]] = {}
    for rows in runs_rows:
        for row in rows:
            by_round.setdefault(int(row["round"]), []).append(row)
    out = []
    for round_, lines in sorted(by_round.items()):
        merged: dict[str, Any] = {"round": round_}
        keys = dict.fromkeys(k for line in lines for k in line if _mergeable(k, line[k]))
        for key in keys:
            values = [float(line[key]) for line in lines if _mergeable(key, line.get(key))]
            merged[key] = sum(values) / len(values)
            merged[f"{key}_std"] = std(values)
            merged[f"{key}_n"] = len(values)
            ci = t_interval(values)
            if ci is not None:
                merged[f"{key}_ci_low"], merged[f"{key}_ci_high"] = ci
        out.append(merged)
    return out


def _mergeable(key: str, value: Any) -> bool:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return numeric and key != "round" and not key.endswith(SPREAD_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# what `compare A B` names


def resolve_runs(spec: str | Path, sweep_dir: Path | None = None) -> tuple[str, list[Path]]:
    """A run directory, or a sweep member whose replicates (`<member>-s<seed>`) are run
    directories side by side: `sweep_dir/member`, or `member` inside `sweep_dir`. Returns a
    display name and the run directories (one per seed)."""
    path = Path(spec)
    if (path / "config.yaml").is_file():
        return path.name, [path]
    parent, member = (sweep_dir, str(spec)) if sweep_dir is not None else (path.parent, path.name)
    runs = sorted(
        (p for p in parent.glob(f"{member}-s*") if (p / "config.yaml").is_file()),
        key=lambda p: seed_of(p.name) or 0,
    )
    runs = [p for p in runs if group_of(p.name) == member]
    if not runs:
        raise ConfigError(
            f"{spec}: neither a run directory nor a sweep member with seed runs "
            f"({parent}/{member}-s<seed>)"
        )
    return member, runs


def last_round(runs: list[Path]) -> int:
    """The last round every run has evaluated."""
    return min(max((int(m["round"]) for m in read_metrics(r)), default=0) for r in runs)


# ---------------------------------------------------------------------------------------------
# the paired test


def row_value(row: dict[str, Any], metric: str) -> float:
    """One eval row's value of `metric` (a rate's 0/1, a trace's tokens, its reward, ...)."""
    if metric == "reward":
        return float(row["reward"])
    column = RATES.get(metric) or MEANS.get(metric)
    if column is None:
        raise ConfigError(f"metric: {metric!r} has no per-question value; one of {list(METRICS)}")
    return float(trace_columns(row)[COL[column]])


def question_means(rows: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """example_id -> the metric's mean over that question's samples and eval seeds."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        sums.setdefault(row["example_id"], []).append(row_value(row, metric))
    return {q: sum(v) / len(v) for q, v in sums.items()}


def eval_rows(run: Path, round_: int, tier: str | None = None) -> list[dict[str, Any]]:
    """A round's eval rows, only one tier's (a hop count's, or a labelled set's) when given."""
    out = stage_dir(run, round_, "eval")
    if not out.exists():
        raise ConfigError(f"round: {run} has no evaluation of round {round_}")
    rows = load_rows(out)
    if tier is None:
        return rows
    kept = [r for r in rows if r.get("tier") == tier]
    if not kept:
        raise ConfigError(f"metric: {run} has no eval rows of tier {tier!r} in round {round_}")
    return kept


def split_metric(metric: str) -> tuple[str | None, str]:
    """`hard/accuracy` -> ("hard", "accuracy"); `accuracy` -> (None, "accuracy")."""
    tier, _, name = metric.rpartition("/")
    return tier or None, name


def side_summary(
    name: str, runs: list[Path], round_: int, metric: str, tier: str | None = None
) -> dict[str, Any]:
    """One side's mean and 95% interval: over its seed runs (t interval) when it has several,
    else over its evaluation's questions (a bootstrap of the per-question means, rates too, as
    `scoring.spread` gives the eval intervals; a rate at 0 or 1: `edge_rate_interval`)."""
    rows = [eval_rows(r, round_, tier) for r in runs]
    means = [sum(row_value(x, metric) for x in rs) / len(rs) for rs in rows]
    if len(runs) > 1:
        low, high = t_interval(means) or (means[0], means[0])
        over, n = "seeds", len(runs)
    else:
        per_question = list(question_means(rows[0], metric).values())
        edge = edge_rate_interval(means[0], len(per_question)) if metric in RATES else None
        low, high = edge or bootstrap_mean_ci(per_question)
        over, n = "questions", len(per_question)
    return {
        "name": name,
        "runs": [str(r) for r in runs],
        "mean": sum(means) / len(means),
        "ci_low": low,
        "ci_high": high,
        "interval_over": over,
        "n": n,
    }


def pair_runs(a: list[Path], b: list[Path]) -> list[tuple[Path, Path]]:
    """Two runs pair with each other; two groups pair their replicates by seed."""
    if len(a) == 1 and len(b) == 1:
        return [(a[0], b[0])]
    seeds_b = {seed_of(p.name): p for p in b}
    pairs = [(p, seeds_b[seed_of(p.name)]) for p in a if seed_of(p.name) in seeds_b]
    if not pairs:
        raise ConfigError(
            f"compare: no seed in common between {[p.name for p in a]} and {[p.name for p in b]}"
        )
    return pairs


def paired_differences(
    pairs: list[tuple[Path, Path]], round_: int, metric: str, tier: str | None = None
) -> tuple[list[str], list[list[float]]]:
    """Per seed pair, the per-question differences A - B on the same held-out questions;
    refused when a pair evaluated different questions (a paired test needs the same ones)."""
    questions: list[str] | None = None
    matrix = []
    for run_a, run_b in pairs:
        qa = question_means(eval_rows(run_a, round_, tier), metric)
        qb = question_means(eval_rows(run_b, round_, tier), metric)
        if set(qa) != set(qb):
            raise ConfigError(_different_questions(run_a, run_b, qa, qb))
        if questions is None:
            questions = sorted(qa)
        elif set(questions) != set(qa):  # replicates on other questions: pair question by pair
            return _flattened(pairs, round_, metric, tier)
        matrix.append([qa[q] - qb[q] for q in questions])
    return questions or [], matrix


def _flattened(
    pairs: list[tuple[Path, Path]], round_: int, metric: str, tier: str | None = None
) -> tuple[list[str], list[list[float]]]:
    """Replicates whose held-out questions differ (a shuffled data file, run.seed per seed):
    one unit per (seed pair, question), resampled as questions."""
    keys, diffs = [], []
    for i, (run_a, run_b) in enumerate(pairs):
        qa = question_means(eval_rows(run_a, round_, tier), metric)
        qb = question_means(eval_rows(run_b, round_, tier), metric)
        keys += [f"{i}:{q}" for q in sorted(qa)]
        diffs += [qa[q] - qb[q] for q in sorted(qa)]
    return keys, [diffs]


def _different_questions(run_a: Path, run_b: Path, qa: dict, qb: dict) -> str:
    shared = len(set(qa) & set(qb))
    cfg_a, cfg_b = (load_config(r / "config.yaml") for r in (run_a, run_b))
    hint = (
        "their data.eval settings differ"
        if cfg_a.data.eval != cfg_b.data.eval or cfg_a.world != cfg_b.world
        else "a shuffled data file draws its questions with run.seed"
    )
    return (
        f"compare: {run_a.name} and {run_b.name} evaluated different held-out questions "
        f"({shared} shared of {len(qa)} / {len(qb)}): {hint}; a paired test needs the same ones"
    )


def paired_compare(
    a: str | Path,
    b: str | Path,
    round_: int | None = None,
    metric: str = "accuracy",
    sweep_dir: Path | None = None,
) -> dict[str, Any]:
    """A against B on the same held-out questions at one round (default: the last both have):
    each side's mean with its interval, and the paired difference A - B with its 95% interval
    and whether that interval excludes zero. `<tier>/<metric>` compares one tier's questions."""
    tier, name = split_metric(metric)
    if name not in METRICS:
        raise ConfigError(f"metric: {metric!r}; one of {', '.join(METRICS)}, or <tier>/<metric>")
    name_a, runs_a = resolve_runs(a, sweep_dir)
    name_b, runs_b = resolve_runs(b, sweep_dir)
    if round_ is None:
        round_ = min(last_round(runs_a), last_round(runs_b))
    pairs = pair_runs(runs_a, runs_b)
    _, matrix = paired_differences(pairs, round_, name, tier)
    paired = paired_bootstrap(matrix[0] if len(matrix) == 1 else matrix)
    return {
        "metric": metric,
        "round": round_,
        "a": side_summary(name_a, runs_a, round_, name, tier),
        "b": side_summary(name_b, runs_b, round_, name, tier),
        "pairs": len(pairs),
        **asdict(paired),
    }
