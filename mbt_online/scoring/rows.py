"""SCORE: one generation becomes a scored row, every diagnostic and reward component beside the
completion, so later stages (teach, build) and the metrics read rows, never re-score text."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from typing import Any

from mbt_online.config import Config
from mbt_online.scoring.behaviour import behaviour_column
from mbt_online.scoring.metrics import split_trace
from mbt_online.scoring.rewards import score
from mbt_online.tasks.base import Example


def score_rows(raw: list[dict], examples: dict[str, Example], cfg: Config) -> list[dict[str, Any]]:
    """SCORE: every diagnostic and reward component of each generation."""
    return [scored_row(examples[r["example_id"]], r, cfg) for r in raw]


def scored_row(ex: Example, raw: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """A raw generation row with its question, diagnostics, reward and reward components."""
    text, finish_reason, tokens = raw["completion"], raw["finish_reason"], raw["tokens"]
    d, components, total = score(text, finish_reason, tokens, ex, cfg.reward)
    return {
        **raw,
        "question": ex.question,
        "answer": ex.answer,
        "aliases": ex.aliases,
        "tier": ex.tier,
        "source": ex.source,
        "trace": split_trace(text),
        "predicted": d.answer or "",
        "correct": d.correct,
        "truncated": d.truncated,
        "answer_inclusive": d.answer_inclusive_error,
        "redundancy": d.redundancy,
        "over_budget": d.over_budget,
        "phases": d.phases,
        "reward": total,
        "components": json.dumps(components),
        "diagnostics": json.dumps(asdict(d)),
        "behaviour": behaviour_column(text, ex),
    }


def by_question(rows: list[dict]) -> dict[str, list[dict]]:
    """Scored rows grouped by question, in first-seen order: the unit TEACH and BUILD choose in."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["example_id"]].append(row)
    return dict(groups)
