"""2WikiMultihopQA: context + supporting facts (as HotpotQA) plus evidence triples as gold hops.

Official file: a JSON array of `_id, type, question, context [[title, [sentences]]],
supporting_facts [[title, sent_id]], evidences [[subject, relation, object]], answer`; hub copies
store structs of parallel lists (`context: {title, content}`, `evidences: {fact, relation,
entity}`).
"""

from __future__ import annotations

from mbt_online.tasks.base import Example, Hop, as_text, norm_text, tuples
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
    """One hop per evidence triple; the supporting sentence naming the object grounds it. The
    texts searched are normalised once per row, not once per triple."""
    evidences = row.get("evidences")
    if not evidences:
        return []
    triples = tuples(evidences, SUBJECT_KEYS, RELATION_KEYS, OBJECT_KEYS, what="hops")
    support = [(t, s, norm_text(s)) for t, s in example.supporting_sentences]
    titles = set(example.supporting_titles)
    docs = [(t, norm_text(text)) for t, text in example.documents if t in titles]
    return [
        _hop(*(as_text(x, "bad_evidences") for x in triple), support, docs) for triple in triples
    ]


def _hop(
    subject: str,
    relation: str,
    obj: str,
    support: list[tuple[str, str, str]],
    docs: list[tuple[str, str]],
) -> Hop:
    """`support`: (title, sentence, normalised sentence); `docs`: (title, normalised text) of the
    supporting documents."""
    o, s = norm_text(obj), norm_text(subject)
    evidence = next(((t, x) for t, x, n in support if o and o in n), None)
    title = (
        evidence[0]
        if evidence
        else next((t for t, n in docs if o and o in n), None)
        or next((t for t, n in docs if s and s in n), "")
    )
    if evidence is None:  # the annotation words the object differently: use the title's fact
        evidence = next(((t, x) for t, x, _ in support if t == title), (title, ""))
    return Hop(
        question=f"What is the {relation} of {subject}?",
        answer=obj,
        title=title,
        evidence=evidence[1],
    )
