"""HotpotQA (distractor setting): context + supporting facts, tiered by question type and size.

Official file: a JSON array of `_id, question, answer, supporting_facts [[title, sent_id]],
context [[title, [sentences]]], type, level`; the hub copy (`hotpotqa/hotpot_qa`) stores context
and supporting facts as structs of parallel lists. Both go through `wiki_context`.
"""

from __future__ import annotations

from mbt_online.tasks.base import Example
from mbt_online.tasks.wiki_context import parse_context_row

NAME = "hotpotqa"
TYPE_TIERS = {"comparison": "easy", "bridge": "medium"}


def tier(kind: str, facts: int) -> str:
    """By question type, except that 3+ supporting facts make a question hard whatever its type."""
    return "hard" if facts >= 3 else TYPE_TIERS.get(kind, "medium")


def parse(row: dict) -> Example:
    return parse_context_row(row, NAME, tier)
