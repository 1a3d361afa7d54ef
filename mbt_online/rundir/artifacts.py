"""A run directory's per-round artifacts as the report and the wandb mirror read them: stage rows,
the training log (`round-<r>/train/log_history.jsonl`), and a stratified sample of rows.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mbt_online.rundir.stages import LOG_HISTORY, load_rows, stage_dir

# what a shown sample is stratified by: a first-N slice of a benchmark-ordered eval set shows one
# benchmark, only correct answers, or no truncated trace at all
STRATA = ("source", "correct", "finish_reason")


def load_stage(run_dir: Path, round_: int, stage: str) -> list[dict[str, Any]]:
    """A stage's rows, or [] when the stage never ran."""
    folder = stage_dir(run_dir, round_, stage)
    return load_rows(folder) if (folder / "state.json").exists() else []


def artifact_rounds(run_dir: Path) -> list[int]:
    rounds = []
    for d in run_dir.glob("round-*"):
        suffix = d.name.removeprefix("round-")
        if d.is_dir() and suffix.isdigit():
            rounds.append(int(suffix))
    return sorted(rounds)


def components(row: dict[str, Any]) -> dict[str, Any]:
    """A row's reward components (stored as a JSON string in stage folders)."""
    return _json_dict(row.get("components"))


def diagnostics(row: dict[str, Any]) -> dict[str, Any]:
    return _json_dict(row.get("diagnostics"))


def _json_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


TRAIN_STEPS = ("sft", "dpo", "grpo")  # TRL steps of a round, in the order they run


def read_train_log(run_dir: Path, round_: int) -> list[dict[str, Any]]:
    """The round's TRL log events, `{"stage": "sft"|"dpo"|"grpo", "step": n, <TRL keys>}` per
    line: TRAIN's, then the GRPO stage's (its own folder, after TRAIN's rollout again).

    A torn last line (a kill while writing) is skipped; the file is rewritten by a resumed TRAIN.
    """
    rows = []
    for folder in ("train", "grpo"):
        path = stage_dir(run_dir, round_, folder) / LOG_HISTORY
        if path.exists():
            rows += _log_lines(path)
    return rows


def _log_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("stage") in TRAIN_STEPS:
            rows.append(row)
    return rows


def global_steps(run_dir: Path, rounds: Sequence[int]) -> list[dict[str, Any]]:
    """Every TRL log event of the given rounds with `global_step`: one counter over the whole run,
    SFT, DPO then GRPO within a round, so rounds and stages lie side by side on one axis."""
    out: list[dict[str, Any]] = []
    offset = 0
    for r in rounds:
        rows = read_train_log(run_dir, r)
        for stage in TRAIN_STEPS:
            by_step: dict[int, dict[str, Any]] = {}  # TRL's end-of-stage summary shares a step
            for x in rows:
                if x["stage"] == stage:
                    by_step.setdefault(int(x.get("step") or 0), {}).update(x)
            for step, x in sorted(by_step.items()):
                out.append({**x, "round": r, "global_step": offset + step})
            offset += last_step(rows, stage)
    return out


def last_step(rows: list[dict[str, Any]], stage: str) -> int:
    """The last step a stage's log events name (0 for a stage that trained nothing)."""
    return max((int(x.get("step") or 0) for x in rows if x.get("stage") == stage), default=0)


def steps_before(run_dir: Path, round_: int) -> int:
    """Where round `round_`'s steps start on `global_steps`' axis (rounds counted from 1)."""
    return sum(
        last_step(read_train_log(run_dir, r), stage)
        for r in range(1, round_)
        for stage in TRAIN_STEPS
    )


def stratified_sample(
    rows: list[dict[str, Any]],
    n: int,
    strata: Sequence[str] = STRATA,
    key: Callable[[dict[str, Any]], str] = lambda r: str(r.get("example_id")),
) -> list[dict[str, Any]]:
    """Up to n rows, taken round-robin over the strata (benchmark x correct x finish reason).

    Within a stratum rows are ordered by a hash of the question id, not by position, so the same
    questions tend to be picked in every round and run (a question can be followed), and rows in
    the order they were written (one benchmark after another) do not crowd out the rest."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get(s)) for s in strata), []).append(row)
    queues = [
        sorted(g, key=lambda r: (zlib.crc32(key(r).encode()), str(r.get("sample", ""))))
        for _, g in sorted(groups.items())
    ]
    picked: list[dict[str, Any]] = []
    while len(picked) < min(n, len(rows)):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


@functools.cache
def stage_rows(run_dir: Path, round_: int, stage: str) -> list[dict[str, Any]]:
    """`load_stage`, read once per report: several sections read the same eval rows."""
    return load_stage(run_dir, round_, stage)


def clear_cache() -> None:
    stage_rows.cache_clear()
