"""Which drafts the teacher sees (TEACH's input): MBT-S one synthesis per question, MBT-R the
lowest-reward failing drafts. Pure functions over scored rollouts, unit tested on plain dicts."""

from __future__ import annotations

from typing import Any

from mbt_online.config import Config
from mbt_online.scoring.rows import by_question
from mbt_online.tasks.base import Example
from mbt_online.teachers.contract import DRAFT_MODES, TeachRequest

Row = dict[str, Any]


def is_failing(row: Row) -> bool:
    """A trace the method exists to fix: wrong, collapsed, or wasteful after reaching the answer."""
    return (
        row["correct"] < 1.0
        or row["truncated"]
        or row["answer_inclusive"]
        or row["over_budget"] > 0
        or row["redundancy"] > 0.3
    )


def teach_requests(
    rows: list[Row], examples: dict[str, Example], cfg: Config
) -> list[TeachRequest]:
    """One trace per question for MBT-S, teacher distillation and Direct-R (the teacher writes
    from the question or its own solution); MBT-R and Distill-R rewrite the lowest-reward
    (failing) drafts, at most `rewrites_per_question`."""
    mode, out = cfg.teacher.mode, []
    modes = {"both": ("mbt-s", "mbt-r"), "none": ()}.get(mode, (mode,))
    for qid, group in by_question(rows).items():
        ex = examples[qid]
        for m in modes:
            if m not in DRAFT_MODES:
                out.append(TeachRequest(example=ex, mode=m))  # type: ignore[arg-type]
                continue
            pool = group if cfg.teacher.rewrite == "all" else [r for r in group if is_failing(r)]
            pool = sorted(pool, key=lambda r: (r["reward"], r["sample"]))
            for row in pool[: cfg.teacher.rewrites_per_question]:
                out.append(TeachRequest(example=ex, mode=m, draft=row["completion"]))  # type: ignore[arg-type]
    return out
