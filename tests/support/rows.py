"""Hand-made scored rows for the statistics and comparison tests."""

from __future__ import annotations

import json
from dataclasses import asdict

from mbt_online.scoring.metrics import TraceDiagnostics


def _row(qid: str, correct: bool, tokens: int, tier: str = "2hop") -> dict:
    d = TraceDiagnostics(
        answer="x",
        correct=float(correct),
        em=float(correct),
        f1=float(correct),
        has_answer_tag=True,
        truncated=tokens >= 100,
        repetition=0.0,
        reached=correct,
        answer_inclusive_error=False,
        first_reach=0.5 if correct else None,
        redundancy=0.0,
        rrp=0.0,
        phases=["planning"],
        tokens=tokens,
        budget=200,
        cover_substring=float(correct),
    )
    return {
        "example_id": qid,
        "tier": tier,
        "source": "world",
        "diagnostics": json.dumps(asdict(d)),
        "components": json.dumps({"correct": float(correct)}),
        "reward": float(correct),
    }
