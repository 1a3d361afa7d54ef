"""The layout HotpotQA and 2WikiMultihopQA share: `context` as (title, sentences) pairs and
`supporting_facts` as (title, sentence id) pairs, in the official lists or the hub's structs.

Each benchmark adds its own tier rule (and 2Wiki its evidence hops) on top of this parser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mbt_online.tasks.base import (
    Example,
    MalformedRow,
    aliases,
    as_text,
    row_id,
    text_field,
    tuples,
    unique,
)

TITLE_KEYS = ("title",)
SENTENCE_KEYS = ("sentences", "content", "sents", "text")
SENT_ID_KEYS = ("sent_id", "sentence_id", "sent_idx")

TierRule = Callable[[str, int], str]  # (question type, supporting facts) -> tier


def parse_context_row(row: dict, source: str, tier: TierRule) -> Example:
    """One context + supporting_facts row; `tier` gives the benchmark's difficulty tier."""
    example_id, question = row_id(row), text_field(row, "question")
    answer = text_field(row, "answer")
    if row.get("context") is None:
        raise MalformedRow("missing_context")
    pairs = tuples(row["context"], TITLE_KEYS, SENTENCE_KEYS, what="documents")
    docs = [(as_text(t, "bad_title"), _doc_sentences(s)) for t, s in pairs]
    if not any(any(sentences) for _, sentences in docs):
        raise MalformedRow("empty_documents")
    by_title: dict[str, list[str]] = {}
    for title, sentences in docs:
        by_title.setdefault(title, sentences)
    if not row.get("supporting_facts"):
        raise MalformedRow("missing_supporting_facts")
    facts = tuples(row["supporting_facts"], TITLE_KEYS, SENT_ID_KEYS, what="facts")
    support = [_supporting_sentence(by_title, as_text(t, "bad_title"), i) for t, i in facts]
    kind = as_text(row.get("type"), "bad_type", "")
    return Example(
        id=example_id,
        question=question,
        documents=[(t, " ".join(x for x in s if x)) for t, s in docs],
        answer=answer,
        aliases=aliases(row, answer),
        supporting_titles=unique(t for t, _ in support),
        supporting_sentences=support,
        tier=tier(kind, len(facts)),
        source=source,
        type=kind,
    )


def _doc_sentences(value: Any) -> list[str]:
    """Stripped sentences (HotpotQA keeps a leading space on each, 2Wiki does not).

    Empty ones stay so that supporting-fact sentence ids still point at the right sentence.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise MalformedRow("bad_layout")
    return [as_text(v, "bad_sentences", "").strip() for v in value]


def _supporting_sentence(
    by_title: dict[str, list[str]], title: str, sent_id: Any
) -> tuple[str, str]:
    if title not in by_title:
        raise MalformedRow("missing_supporting_title", title)
    sentences = by_title[title]
    valid = isinstance(sent_id, int) and not isinstance(sent_id, bool)
    if not valid or not 0 <= sent_id < len(sentences) or not sentences[sent_id]:
        shown = sent_id if valid and abs(sent_id) < 10**9 else type(sent_id).__name__
        raise MalformedRow("bad_sentence_id", f"{title}[{shown}]")
    return title, sentences[sent_id]
