"""The gold chain a trace has to walk, grounded in the example's documents.

Each `Step` is one hop of the chain: what it does (a verb phrase for the plan), what it finds, the
document it comes from and the sentence that says so. Steps come from the annotated hops (MuSiQue
decompositions, 2Wiki evidence triples, synthetic-world chains) or, when there are none
(HotpotQA), from the supporting sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mbt_online.scoring.text import mentions, normalize_answer, split_sentences, wordset
from mbt_online.tasks.base import Example


@dataclass
class Step:
    """One hop of the gold chain, as the trace narrates it."""

    vp: str  # what the step does, as a verb phrase for the plan ("find the capital of X")
    answer: str  # the step's finding; "" where the annotation does not name one (HotpotQA)
    doc: int  # 1-based index into ex.documents; 0 when the document is not among them
    title: str
    evidence: str  # the supporting sentence(s)


def is_yes_no(ex: Example) -> bool:
    """A yes/no question: its answer word is in every trace, so it must be stated as an answer."""
    return normalize_answer(ex.answer) in ("yes", "no")


def is_comparison(ex: Example) -> bool:
    """A question that weighs two entities (typed so, or answered yes/no): no bridge to follow."""
    return "comparison" in ex.type.lower() or is_yes_no(ex)


def _ground(ex: Example, title: str, answer: str) -> int:
    """The document a finding comes from: its titled document that states the answer (MuSiQue
    repeats titles across paragraphs), else any supporting, then any document stating it, else
    the titled one. 0 when nothing matches."""
    titled = [i for i, (t, _) in enumerate(ex.documents, 1) if t == title]
    stating = [i for i, (_, text) in enumerate(ex.documents, 1) if mentions(text, answer)]
    support = set(ex.supporting_titles)
    for pool in (
        [i for i in titled if i in stating],
        [i for i in stating if ex.documents[i - 1][0] in support],
        stating,
        titled,
    ):
        if pool:
            return pool[0]
    return 0


def _titled_doc(ex: Example, title: str, evidence: str) -> int:
    """The document with this title that contains the evidence (titles repeat in MuSiQue)."""
    titled = [i for i, (t, _) in enumerate(ex.documents, 1) if t == title]
    ev = normalize_answer(evidence)
    first = titled[0] if titled else 0
    return next((i for i in titled if ev in normalize_answer(ex.documents[i - 1][1])), first)


def _evidence(ex: Example, doc: int, answer: str, fallback: str) -> str:
    """The sentence of the document that states the answer; the annotation's own otherwise."""
    if doc:
        sentences = split_sentences(ex.documents[doc - 1][1])
        hit = next((s for s in sentences if mentions(s, answer)), None)
        if hit:
            return hit
        if not fallback and sentences:
            return sentences[0]
    return fallback


# Relations that read badly as "the <relation> of X"; they are quoted instead.
_VERBAL_RELATIONS = wordset(
    """located part member instance subclass is was has had followed follows replaced replaces
    owned operated made produced performed published educated employed based named applies shares
    headquarters contains"""
)


def _hop_vp(question: str) -> str:
    """A sub-question as a verb phrase: "X >> capital" -> "find the capital of X"."""
    q = " ".join(question.split()).rstrip("?").strip()
    if ">>" in q:
        subject, relation = (s.strip() for s in q.split(">>", 1))
        first = relation.split()[0].lower() if relation else ""
        rel = f'"{relation}"' if first in _VERBAL_RELATIONS else relation
        return f"find the {rel} of {subject}"
    m = re.match(r"(?i)^(what|which) (is|was|are|were) (the .+)$", q)
    if m:
        return f"find {m.group(3)}"
    return f'answer "{q[:1].upper()}{q[1:]}?"' if q else "find the next fact in the chain"


def _fill_refs(question: str, earlier: list[str]) -> str:
    """MuSiQue-style "#k" placeholders replaced by hop k's answer (loaders may leave them)."""

    def fill(m: re.Match) -> str:
        k = int(m.group(1))
        return earlier[k - 1] if 1 <= k <= len(earlier) else m.group(0)

    return re.sub(r"#(\d+)", fill, question)


def _steps_from_hops(ex: Example) -> list[Step]:
    steps: list[Step] = []
    for hop in ex.hops:
        doc = _ground(ex, hop.title, hop.answer)
        title = ex.documents[doc - 1][0] if doc else hop.title
        fallback = hop.evidence if mentions(hop.evidence, hop.answer) or not doc else ""
        evidence = _evidence(ex, doc, hop.answer, fallback) or hop.evidence
        question = _fill_refs(hop.question, [s.answer for s in steps])
        steps.append(Step(_hop_vp(question), hop.answer, doc, title, evidence))
    return steps


def _support_groups(ex: Example) -> dict[str, list[str]]:
    """Supporting sentences by title; where sentences are not annotated, the sentence stating the
    answer (or the first) of each supporting document, or of the document that states the answer."""
    groups: dict[str, list[str]] = {}
    for title, sentence in ex.supporting_sentences:
        groups.setdefault(title, []).append(" ".join(sentence.split()))
    if groups:
        return groups
    stating = [t for t, text in ex.documents if mentions(text, ex.answer)]
    for title in ex.supporting_titles or stating[:1]:
        doc = _ground(ex, title, ex.answer)
        groups[title] = [_evidence(ex, doc, ex.answer, "")] if doc else []
    return groups


def _order_titles(ex: Example, groups: dict[str, list[str]]) -> list[str]:
    """Bridge: a title named in another group's sentences and the group stating the answer come
    later. Comparison: the order in which the question names the entities."""
    titles = list(groups)
    if is_comparison(ex):
        q = ex.question.lower()
        return sorted(titles, key=lambda t: q.find(t.lower()) % (len(q) + 1))

    def key(title: str) -> tuple[int, int]:
        named = any(mentions(" ".join(s), title) for t, s in groups.items() if t != title)
        return (int(mentions(" ".join(groups[title]), ex.answer)), int(named))

    return sorted(titles, key=key)


def _steps_from_support(ex: Example) -> list[Step]:
    groups = _support_groups(ex)
    titles = _order_titles(ex, groups)
    steps = []
    for k, title in enumerate(titles):
        evidence = " ".join(groups[title])
        doc = _titled_doc(ex, title, evidence)
        last = k == len(titles) - 1
        nxt = titles[k + 1] if not last else ""
        if is_comparison(ex):
            answer, vp = "", f"get what Document [{doc}] says about {title}"
        elif last:
            answer = ex.answer if mentions(evidence, ex.answer) else ""
            vp = f"read Document [{doc}] on {title} for the fact the question asks about"
        else:
            answer = nxt if mentions(evidence, nxt) else ""
            vp = f"use Document [{doc}] on {title} to identify the entity that leads onward"
        if not doc:
            vp = vp.replace("Document [0]", "the document")
        steps.append(Step(vp, answer, doc, title, evidence))
    return steps


def gold_steps(ex: Example) -> list[Step]:
    """The chain to walk: from the annotated hops when there are any, else the supporting facts."""
    return _steps_from_hops(ex) if ex.hops else _steps_from_support(ex)


def compared_titles(ex: Example, steps: list[Step]) -> list[str]:
    """The two things a comparison question weighs: step titles the question names, in order."""
    titles = list(dict.fromkeys(s.title for s in steps if s.title))
    named = [t for t in titles if mentions(ex.question, t)]
    return (named + [t for t in titles if t not in named])[:2]


def link_from(steps: list[Step], k: int) -> int | None:
    """The latest earlier step whose finding this step builds on (its title, text or question)."""
    step = steps[k]
    for j in range(k - 1, -1, -1):
        found = steps[j].answer
        if found and any(mentions(x, found) for x in (step.title, step.vp, step.evidence)):
            return j
    return None


def lookalikes(ex: Example, steps: list[Step]) -> list[int]:
    """Documents a reader could wrongly follow: outside the chain, not sharing a title with a
    chain document (MuSiQue repeats titles), and not named after a finding (that would make
    "it is about X, not Y" false)."""
    chain_titles = {s.title for s in steps} | set(ex.supporting_titles)
    findings = [*ex.answers, *(s.answer for s in steps if s.answer)]
    used = {s.doc for s in steps}
    return [
        i
        for i, (t, _) in enumerate(ex.documents, 1)
        if i not in used
        and t not in chain_titles
        and not any(mentions(t, f) or mentions(f, t) for f in findings)
    ]
