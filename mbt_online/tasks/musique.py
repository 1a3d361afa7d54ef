"""MuSiQue-Ans: paragraphs plus a question decomposition whose steps are the gold hops.

Official file: JSON lines of `id, paragraphs [{idx, title, paragraph_text, is_supporting}],
question, question_decomposition [{id, question, answer, paragraph_support_idx}], answer,
answer_aliases, answerable`; hub copies store the lists of records as structs of parallel lists.
Tiers follow the hop count, which the id prefix (`2hop`, `3hop1`, `4hop3`...) names.
"""

from __future__ import annotations

import re

from mbt_online.tasks.base import (
    Example,
    Hop,
    MalformedRow,
    aliases,
    as_text,
    norm_text,
    records,
    row_id,
    text_field,
    unique,
)

NAME = "musique"
HOP_TIERS = {2: "easy", 3: "medium", 4: "hard"}

# Split after . ! ? unless the period ends a lone capital ("U.S.", "J. Smith") or a title ("Mr.").
_SENTENCE_END = re.compile(
    r"(?<=[.!?])(?<!\b[A-Z]\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMrs\.)\s+"
)


def parse(row: dict) -> Example:
    if row.get("answerable") is False:
        raise MalformedRow("unanswerable")
    example_id, question = row_id(row), text_field(row, "question")
    answer = text_field(row, "answer")
    if row.get("paragraphs") is None:
        raise MalformedRow("missing_context")
    paragraphs = records(row["paragraphs"], "documents")
    if not all(isinstance(p, dict) for p in paragraphs):
        raise MalformedRow("bad_layout")
    docs = [
        (
            as_text(p.get("title"), "bad_title", ""),
            as_text(p.get("paragraph_text"), "bad_paragraph_text", "").strip(),
        )
        for p in paragraphs
    ]
    if not any(text for _, text in docs):
        raise MalformedRow("empty_documents")
    position = {_index(p.get("idx", i)): i for i, p in enumerate(paragraphs)}
    steps = records(row.get("question_decomposition") or [], "hops")
    if not steps or not all(isinstance(s, dict) for s in steps):
        raise MalformedRow("missing_decomposition")
    hops, used = [], []
    for step in steps:
        support = step.get("paragraph_support_idx")
        pos = position.get(support) if _is_index(support) else None
        if pos is None:
            raise MalformedRow("missing_support_paragraph")
        hops.append(_hop(step, [h.answer for h in hops], docs[pos]))
        used.append(pos)
    used += [i for i, p in enumerate(paragraphs) if p.get("is_supporting") and i not in used]
    return Example(
        id=example_id,
        question=question,
        documents=docs,
        answer=answer,
        aliases=aliases(row, answer),
        supporting_titles=unique(docs[i][0] for i in used),
        supporting_sentences=[(h.title, h.evidence) for h in hops],
        hops=hops,
        tier=tier(example_id, len(steps)),
        source=NAME,
        type=question_type(example_id, len(steps)),
    )


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _index(value: object) -> int:
    """A paragraph's `idx`: an integer, or the row is `bad_idx` (a list or dict is no key)."""
    if not _is_index(value):
        raise MalformedRow("bad_idx", type(value).__name__)
    return value


def _hop(step: dict, earlier: list[str], doc: tuple[str, str]) -> Hop:
    """Sub-question with `#k` filled by hop k's answer; evidence: first sentence with the answer."""

    def fill(match: re.Match) -> str:
        k = int(match.group(1))  # at most 4 digits: never past int's digit limit
        return earlier[k - 1] if 1 <= k <= len(earlier) else match.group(0)

    answer = as_text(step.get("answer"), "bad_decomposition", "").strip()
    question = as_text(step.get("question"), "bad_decomposition", "")
    sentences = _source_sentences(doc[1]) or [""]
    wanted = norm_text(answer)  # normalised once, not once per sentence
    found = (s for s in sentences if wanted and wanted in norm_text(s))
    evidence = next(found, sentences[0])
    return Hop(
        question=re.sub(r"#(\d{1,4})(?!\d)", fill, question),
        answer=answer,
        title=doc[0],
        evidence=evidence,
    )


def _source_sentences(text: str) -> list[str]:
    """Sentences of a MuSiQue paragraph (encyclopedic source text, where "U.S." and "Mr." are
    common); generated traces are split by `scoring.text.split_sentences`."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def question_type(example_id: str, steps: int) -> str:
    """The id prefix (`2hop`, `3hop1`, `4hop3`...) names the composition shape."""
    prefix = example_id.split("__", 1)[0]
    return prefix if re.fullmatch(r"\d{1,3}hop\d*", prefix) else f"{steps}hop"


def tier(example_id: str, steps: int) -> str:
    hops = int(re.match(r"\d+", question_type(example_id, steps)).group())
    return HOP_TIERS.get(hops, "easy" if hops < 2 else "hard")
