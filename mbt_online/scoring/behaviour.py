"""Behaviour only a synthetic world can see: the slips its look-alike chains invite
(`world.twin_hops`), whether a trace catches and repairs them, and whether its verification
re-reads a real link of the gold chain rather than repeating a cue word.

A real benchmark cannot tell a caught slip from a lucky trace; the world knows every slip
(`tasks.world.twin_slip`), so these are exact per trace, and a round's rates are plain counts.
"""

from __future__ import annotations

import json
from typing import Any

from mbt_online.tasks.base import Example
from mbt_online.tasks.world import twin_slip

_VERIFY_LEAD = "check"  # the world student's verification lines start "Check:"


def trace_behaviour(text: str, ex: Example) -> dict[str, bool]:
    """Per trace: `twin` (the question invites a slip), `slipped` (the look-alike's fact was
    copied), `caught` (after it, the hop's own sentence is re-read: a repair or a verification
    that finds it), `verifies` (a verification line) and `real_link` (one of them quotes a
    sentence of the gold chain)."""
    twin = twin_slip(ex)
    checks = [ln for ln in text.splitlines() if ln.strip().lower().startswith(_VERIFY_LEAD)]
    gold = [h.evidence for h in ex.hops if h.evidence]
    out = {
        "twin": twin is not None,
        "slipped": False,
        "caught": False,
        "verifies": bool(checks),
        "real_link": any(g in ln for ln in checks for g in gold),
    }
    if twin is not None:
        at = text.find(twin.wrong[0])
        if at >= 0:
            out["slipped"] = True
            out["caught"] = ex.hops[twin.hop].evidence in text[at + len(twin.wrong[0]) :]
    return out


def behaviour_column(text: str, ex: Example) -> str:
    """The scored row's `behaviour` column: JSON of `trace_behaviour` for world questions, "{}"
    elsewhere (a real benchmark has no known slips)."""
    return json.dumps(trace_behaviour(text, ex)) if ex.source == "world" else "{}"


def behaviour_metrics(rows: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """`<prefix>/slip_rate` (of questions with a look-alike chain), `slips_caught` and
    `slips_repaired` (caught and answered right; both of slips), `verify_rate` and
    `verify_real_link` (of traces that verify); {} when no row is a world row."""
    beh = [(json.loads(r.get("behaviour") or "{}"), r) for r in rows]
    beh = [(b, r) for b, r in beh if b]
    if not beh:
        return {}
    twins = [(b, r) for b, r in beh if b["twin"]]
    slips = [(b, r) for b, r in twins if b["slipped"]]
    verifies = [b for b, _ in beh if b["verifies"]]
    return {
        f"{prefix}/slips": float(len(slips)),
        f"{prefix}/slip_rate": _share(len(slips), len(twins)),
        f"{prefix}/slips_caught": _share(sum(b["caught"] for b, _ in slips), len(slips)),
        f"{prefix}/slips_repaired": _share(
            sum(b["caught"] and r["correct"] >= 1.0 for b, r in slips), len(slips)
        ),
        f"{prefix}/verify_rate": _share(len(verifies), len(beh)),
        f"{prefix}/verify_real_link": _share(sum(b["real_link"] for b in verifies), len(verifies)),
    }


def _share(k: float, n: int) -> float:
    return float(k) / n if n else 0.0
