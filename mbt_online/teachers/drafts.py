"""MBT-R: reading the student's draft.

What a rewrite keeps and what it corrects: the draft's final answer and reasoning (tags
stripped), its sentences without loops and restatements, the slip where it went wrong (a
non-gold answer, or a distractor it followed), the findings worth keeping in its own words (in
the monologue's "we"), and the paragraph that discovers the slip at a document.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from mbt_online.scoring.metrics import contains_answer, extract_answer, split_trace
from mbt_online.scoring.text import mentions, normalize_answer, split_sentences, wordset
from mbt_online.tasks.base import Example
from mbt_online.teachers.chain import Step, lookalikes
from mbt_online.teachers.contract import leaked_phrases
from mbt_online.teachers.phrases import (
    TERSE,
    WRONG_ANSWER,
    WRONG_ENTITY,
    WRONG_SOURCE,
    cite,
    pick,
    quote,
)

_NOISE = (
    "hmm",
    "maybe",
    "perhaps",
    "not sure",
    "let me check",
    "again",
    "wait",
    "i think",
    "i guess",
    "answer is",
    "<",
    "?",
)
_STOP = wordset(
    """a an the and or but if so of to in on at by for with from as is are was were be been
it its this that these those there then than which who what when where how not do does did have has
had can could would should will also just only very into about after before we i our my you he she
they his her their document documents"""
)
# Subject "I" where it is clearly the pronoun (sentence start or after a clause word), not a
# Roman numeral ("World War I").
_I_SUBJECT = re.compile(
    r"(^|[,;:]\s+|\b(?:so|and|but|then|now|because|that|since|if|when)\s+)I(?:'m| am| was|\b)(?=\s)"
)
_I_FORMS = {"I'm": "we're", "I am": "we are", "I was": "we were", "I": "we"}


def _to_we(sentence: str) -> str:
    """First person singular to plural: the monologue's voice is "we" throughout."""

    def sub(m: re.Match) -> str:
        form = m.group(0)[len(m.group(1)) :]
        return m.group(1) + _I_FORMS[form]

    out = _I_SUBJECT.sub(sub, sentence)
    for pat, rep in (
        (r"\bLet me\b", "Let us"),
        (r"\blet me\b", "let us"),
        (r"\bmy\b", "our"),
        (r"\bMy\b", "Our"),
        (r"\bme\b", "us"),
        (r"\bmyself\b", "ourselves"),
    ):
        out = re.sub(pat, rep, out)
    return out[:1].upper() + out[1:]


def split_draft(draft: str | None) -> tuple[str, str]:
    """(reasoning without tags, the draft's final answer or "")."""
    text = draft or ""
    final = extract_answer(text)
    body = re.sub(r"(?is)</?(think|answer)>", " ", split_trace(text))
    if final is None:
        said = list(re.finditer(r"(?i)answer is:?\s*([^\n.]{1,80})", body))
        final = said[-1].group(1) if said else ""
    return body, final.strip()


def content(text: str) -> set[str]:
    """Content words (no stop words, longer than two letters): what overlap is measured on."""
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2 and w not in _STOP}


def dedupe(sentences: list[str]) -> tuple[list[str], int]:
    """Drop repeats and near-repeats (a loop restating itself); count what was dropped."""
    kept: list[str] = []
    seen: list[set[str]] = []
    dropped = 0
    for s in sentences:
        words = content(s)
        if any(words and len(words & w) >= 0.8 * len(words | w) for w in seen) or (
            not words and any(normalize_answer(s) == normalize_answer(k) for k in kept)
        ):
            dropped += 1
            continue
        kept.append(s)
        seen.append(words)
    return kept, dropped


def _matches_gold(candidate: str, ex: Example) -> bool:
    c = normalize_answer(candidate)
    return bool(c) and any(
        g and (c == g or f" {g} " in f" {c} " or f" {c} " in f" {g} ")
        for g in map(normalize_answer, ex.answers)
    )


def _relevant_docs(steps: list[Step]) -> set[int]:
    return {s.doc for s in steps if s.doc}


@dataclass
class Slip:
    """Where the draft went wrong: a non-gold final answer, or a distractor entity it followed."""

    kind: Literal["answer", "entity"]
    text: str
    doc: int  # the distractor document it comes from, 0 if none
    sentence: str = ""  # the draft's sentence that took the wrong turn


# Final answers that commit to nothing: there is no wrong turn to correct, only a missing answer.
_NON_ANSWERS = {"", "unknown", "none", "i dont know", "not sure", "cannot be determined", "na"}


def find_slip(ex: Example, steps: list[Step], sentences: list[str], final: str) -> Slip | None:
    relevant = _relevant_docs(steps)
    distractors = [
        (i, t)
        for i in lookalikes(ex, steps)
        if len(normalize_answer(t := ex.documents[i - 1][0])) >= 5
    ]
    committed = normalize_answer(final) not in _NON_ANSWERS and len(final.split()) <= 12
    if committed and not _matches_gold(final, ex):
        others = [i for i, (_, text) in enumerate(ex.documents, 1) if i not in relevant]
        src = next((i for i in others if mentions(ex.documents[i - 1][1], final)), 0)
        return Slip("answer", final, src)
    negative = ("not", "irrelevant", "ignore", "unrelated", "distractor", "set aside")
    for s in sentences:
        if any(n in s.lower() for n in negative):
            continue
        for i, title in distractors:
            if mentions(s, title) and not any(mentions(s, x.title) for x in steps if x.title):
                return Slip("entity", title, i, s)
    return None


def restates(words: set[str], said: set[str]) -> bool:
    """Most of the sentence's content was already said: a restatement, not a new finding."""
    return bool(words) and len(words & said) >= 0.6 * len(words)


def _step_of(sentence: str, steps: list[Step], start: int) -> int | None:
    """The step a draft sentence reports: the latest finding it states, else the first step (from
    `start` on) whose entity it names."""
    found = [j for j in range(start, len(steps)) if mentions(sentence, steps[j].answer)]
    if found:
        return found[-1]
    return next((j for j in range(start, len(steps)) if mentions(sentence, steps[j].title)), None)


def draft_facts(
    ex: Example, steps: list[Step], sentences: list[str], slip: Slip | None
) -> dict[int, list[str]]:
    """The draft's sentences worth keeping, by step: each names a step's finding or entity and
    overlaps a supporting document; none repeats doubt or the slip; nothing after the answer."""
    support = set().union(*(content(ex.documents[s.doc - 1][1]) for s in steps if s.doc))
    facts: dict[int, list[str]] = {}
    said: set[str] = set()
    pointer = 0
    for s in sentences:
        low, words = s.lower(), content(s)
        noisy = any(n in low for n in _NOISE) or not 4 <= len(s.split()) <= 60
        if noisy or leaked_phrases(s, ex) or (slip and mentions(s, slip.text)):
            continue
        if len(words & support) < max(2, 0.4 * len(words)) or restates(words, said):
            continue
        reaches = contains_answer(s, ex.answers)
        k = len(steps) - 1 if reaches else _step_of(s, steps, pointer)
        if k is None or k < 0 or len(facts.get(k, [])) >= 2:
            continue
        facts.setdefault(k, []).append(_to_we(s.strip()))
        said |= words
        pointer = k
        if reaches:
            break  # the answer is established: what follows restates it
    return facts


def _answer_step(ex: Example, steps: list[Step]) -> Step | None:
    """The step whose evidence states the gold answer; the last step otherwise."""
    last = steps[-1] if steps else None
    return next((s for s in steps if mentions(s.evidence, ex.answer)), last)


def slip_step(steps: list[Step], slip: Slip) -> int:
    """The step a wrong turn belongs to: the final one for a wrong answer; for a wrong entity, the
    step whose sub-question and evidence share most words with the sentence that took it."""
    if slip.kind == "answer":
        return len(steps) - 1
    words = content(slip.sentence)
    overlap = [len(words & content(f"{s.vp} {s.evidence}")) for s in steps]
    return overlap.index(max(overlap))


def correction(ex: Example, steps: list[Step], slip: Slip, rng: random.Random, terse: int) -> str:
    """Discover the draft's error at a document, rather than silently replacing it. The quote is
    the few words around the finding: the execution paragraph already quoted the sentence."""
    words = min(TERSE[terse][0], 16)
    if slip.kind == "entity":
        step = steps[slip_step(steps, slip)]
        ev = quote(step.evidence, words, step.answer)
        ref = cite(ex, step.doc, step.title)
        return pick(
            rng, WRONG_ENTITY, dt=slip.text, dref=cite(ex, slip.doc), t=step.title, ref=ref, ev=ev
        )
    step = _answer_step(ex, steps)
    src = pick(rng, WRONG_SOURCE, dref=cite(ex, slip.doc), wrong=slip.text) if slip.doc else ""
    ref = cite(ex, step.doc, step.title) if step else "the documents"
    ev = quote(step.evidence, words, step.answer) if step else ""
    return pick(rng, WRONG_ANSWER, wrong=slip.text, src=src, ref=ref, ev=ev, gold=ex.answer)


def draft_slip(ex: Example, steps: list[Step], draft: str | None) -> Slip | None:
    """The draft's error for the short styles (None for MBT-S, which has no draft): its deduped
    sentences and final answer, judged against the gold chain."""
    if draft is None:
        return None
    body, final = split_draft(draft)
    return find_slip(ex, steps, dedupe(split_sentences(body))[0], final)
