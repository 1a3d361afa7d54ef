"""2WikiMultihopQA: context + supporting facts (as HotpotQA) plus evidence triples as gold hops.

Official file: a JSON array of `_id, type, question, context [[title, [sentences]]],
supporting_facts [[title, sent_id]], evidences [[subject, relation, object]], answer`; hub copies
store structs of parallel lists (`context: {title, content}`, `evidences: {fact, relation,
entity}`).
"""

from __future__ import annotations

from mbt_online.tasks.base import Example, Hop, contains_phrase, tuples
from mbt_online.tasks.wiki_context import parse_context_row

NAME = "2wikimultihopqa"
TYPE_TIERS = {
    "comparison": "easy",
    "inference": "medium",
    "compositional": "medium",
    "bridge_comparison": "hard",
}
SUBJECT_KEYS = ("subject", "fact", "head")
RELATION_KEYS = ("relation", "predicate")
OBJECT_KEYS = ("object", "entity", "tail")


def tier(kind: str, facts: int) -> str:
    """By question type alone: a bridge-comparison compares two two-hop chains."""
    return TYPE_TIERS.get(kind, "medium")


def parse(row: dict) -> Example:
    example = parse_context_row(row, NAME, tier)
    example.hops = _hops(row, example)
    return example


def _hops(row: dict, example: Example) -> list[Hop]:
    """One hop per evidence triple; the supporting sentence naming the object grounds it."""
    evidences = row.get("evidences")
    if not evidences:
        return []
    return [
        _hop(str(s), str(r), str(o), example)
        for s, r, o in tuples(evidences, SUBJECT_KEYS, RELATION_KEYS, OBJECT_KEYS)
    ]


def _hop(subject: str, relation: str, obj: str, example: Example) -> Hop:
    support = example.supporting_sentences
    evidence = next(((t, s) for t, s in support if contains_phrase(s, obj)), None)
    docs = [(t, text) for t, text in example.documents if t in example.supporting_titles]
    title = (
        evidence[0]
        if evidence
        else next((t for t, text in docs if contains_phrase(text, obj)), None)
        or next((t for t, text in docs if contains_phrase(text, subject)), "")
    )
    if evidence is None:  # the annotation words the object differently: use the title's fact
        evidence = next(((t, s) for t, s in support if t == title), (title, ""))
    return Hop(
        question=f"What is the {relation} of {subject}?",
        answer=obj,
        title=title,
        evidence=evidence[1],
    )
