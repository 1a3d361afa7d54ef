"""Answer extraction, normalisation, EM / F1 / cover, trace diagnostics, AES, RRP and MQI heuristics.

Pure functions on strings: no model, no I/O. Rewards and evaluation are built from these.
"""

from __future__ import annotations

import re

# The five metacognitive phases of MBT, in the order a well-regulated trace shows them.
PHASES = ("understanding", "planning", "execution", "self_correction", "verification")

# Surface cues of each phase. The heuristic MQI and the teacher's `verify` both read phases through
# these, so the structured teacher must (and an LLM teacher naturally does) use such wording.
PHASE_CUES: dict[str, tuple[str, ...]] = {
    "understanding": (
        "the question asks", "we need to find", "we are asked", "the goal is", "the task is",
        "what we need", "irrelevant", "distractor", "set aside", "not relevant", "can ignore",
        "we must determine", "asks for", "asks which", "asks who", "asks what",
    ),
    "planning": (
        "plan", "first,", "first we", "step 1", "then we", "next we", "roadmap", "sub-question",
        "two steps", "three steps", "four steps", "hops", "strategy", "approach",
    ),
    "execution": (
        "document", "according to", "states that", "says that", "we find", "this gives",
        "so the", "which means", "tells us", "we learn", "shows that",
    ),
    "self_correction": (
        "wait", "but that", "mistake", "wrong", "actually", "correct this", "on closer", "re-read",
        "not quite", "instead", "that was", "i misread", "we misread", "inconsistent", "doesn't match",
        "does not match", "however",
    ),
    "verification": (
        "verify", "check", "double-check", "confirm", "consistent with", "matches", "verified",
        "sanity", "re-check", "satisfies",
    ),
}


def detect_phases(text: str) -> list[str]:
    """Phases whose cues appear in the text, in canonical order (heuristic MQI's phase list)."""
    low = text.lower()
    return [p for p in PHASES if any(cue in low for cue in PHASE_CUES[p])]
