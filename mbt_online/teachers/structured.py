"""Teacher traces (MBT-S synthesis, MBT-R rewrite) and the gate every teacher trace must pass.

`verify` is the project's answer to the paper's missing check: a teacher trace only becomes
training data if it actually reaches the gold answer, shows all five phases, fits the token budget
and never lets slip that the answer (or the student's draft) was handed to the teacher.

`StructuredTeacher` is a rule-based stand-in for an LLM teacher, for CPU runs and tests. It writes
five-phase monologues grounded in the gold annotations of any `Example`: hops (MuSiQue
decompositions, 2Wiki evidence triples, synthetic-world chains) or, when there are none (HotpotQA),
supporting sentences. Its wording is drawn from several phrasings per phase so that a student
trained on it learns the structure rather than one memorised sentence.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mbt_online.scoring.metrics import (
    PHASES,
    contains_answer,
    detect_phases,
    extract_answer,
    normalize_answer,
    split_sentences,
    split_trace,
)
from mbt_online.tasks.base import Example
from mbt_online.tasks.world import clean_lines, is_world_question

Mode = Literal["mbt-s", "mbt-r"]
STYLES = ("full", "concise", "student")


@dataclass
class TeachRequest:
    """One trace to produce; `draft` is the student's own reasoning, used by MBT-R."""

    example: Example
    mode: Mode
    draft: str | None = None


@dataclass
class TeachResult:
    """The teacher's output for one request. `trace` holds the last attempt even when it failed
    verification, so a run's artifacts show what was rejected; train only on `verified` ones."""

    example_id: str
    mode: str
    trace: str | None
    verified: bool
    reasons: list[str]
    tries: int
    backend: str
    usage: dict = field(default_factory=dict)


@dataclass
class Verdict:
    ok: bool
    reasons: list[str]


# --------------------------------------------------------------------------------------------------
# verify

# Phrases by which a trace would reveal that the teacher was handed the answer or the draft. A
# student trained on them learns to expect an oracle, which it never has at test time.
LEAK_PHRASES = (
    "the given answer",
    "the provided answer",
    "the answer provided",
    "the answer we were given",
    "we were given the answer",
    "we were told the answer",
    "the correct answer is given",
    "the draft",
    "gold solution",
    "gold answer",
    "reference answer",
    "the expected answer",
    "the answer key",
)


def count_words(text: str) -> int:
    """Default token count: whitespace words, a tokenizer-free proxy stable across models."""
    return len(text.split())


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def leaked_phrases(trace: str, ex: Example) -> list[str]:
    """Leak phrases in the trace that are not quoted from the documents ("the draft" is a normal
    phrase in an article about the NBA draft; a trace citing it has leaked nothing)."""
    low, docs = _squash(trace), _squash(" ".join(text for _, text in ex.documents))
    return [p for p in LEAK_PHRASES if re.search(rf"\b{p}\b", low) and p not in docs]


def verify(
    trace: str | None,
    ex: Example,
    budget_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> Verdict:
    """Accept a teacher trace only if it could serve as a training target; say why not otherwise.

    Reasons are stable short strings (they are counted per round): "empty", "answer_not_reached",
    "missing_phases:<comma list>", "over_budget", "leak".
    """
    if not trace or not trace.strip():
        return Verdict(False, ["empty"])
    reasons = []
    if not contains_answer(trace, ex.answers):
        reasons.append("answer_not_reached")
    found = detect_phases(trace)
    missing = [p for p in PHASES if p not in found]
    if missing:
        reasons.append("missing_phases:" + ",".join(missing))
    if budget_tokens is not None and (count_tokens or count_words)(trace) > budget_tokens:
        reasons.append("over_budget")
    if leaked_phrases(trace, ex):
        reasons.append("leak")
    return Verdict(not reasons, reasons)


# --------------------------------------------------------------------------------------------------
# The gold chain: what the trace has to walk through, grounded in the example's documents


@dataclass
class _Step:
    vp: str  # what the step does, as a verb phrase for the plan ("find the capital of X")
    answer: str  # the step's finding; "" where the annotation does not name one (HotpotQA)
    doc: int  # 1-based index into ex.documents; 0 when the document is not among them
    title: str
    evidence: str  # the supporting sentence(s)


def _norm(text: str) -> str:
    return normalize_answer(text)


def _mentions(text: str, phrase: str) -> bool:
    """Whole-word mention after SQuAD normalisation; empty phrases never match."""
    needle = _norm(phrase)
    return bool(needle) and f" {needle} " in f" {_norm(text)} "


def _is_yes_no(ex: Example) -> bool:
    return _norm(ex.answer) in ("yes", "no")


def _is_comparison(ex: Example) -> bool:
    return "comparison" in ex.type.lower() or _is_yes_no(ex)


def _ground(ex: Example, title: str, answer: str) -> int:
    """The document a finding comes from: its titled document that states the answer (MuSiQue
    repeats titles across paragraphs), else any supporting, then any document stating it, else
    the titled one. 0 when nothing matches."""
    titled = [i for i, (t, _) in enumerate(ex.documents, 1) if t == title]
    stating = [i for i, (_, text) in enumerate(ex.documents, 1) if _mentions(text, answer)]
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
    ev = _norm(evidence)
    first = titled[0] if titled else 0
    return next((i for i in titled if ev in _norm(ex.documents[i - 1][1])), first)


def _evidence(ex: Example, doc: int, answer: str, fallback: str) -> str:
    """The sentence of the document that states the answer; the annotation's own otherwise."""
    if doc:
        sentences = split_sentences(ex.documents[doc - 1][1])
        hit = next((s for s in sentences if _mentions(s, answer)), None)
        if hit:
            return hit
        if not fallback and sentences:
            return sentences[0]
    return fallback


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Relations that read badly as "the <relation> of X"; they are quoted instead.
_VERBAL_RELATIONS = _wordset(
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


def _steps_from_hops(ex: Example) -> list[_Step]:
    steps: list[_Step] = []
    for hop in ex.hops:
        doc = _ground(ex, hop.title, hop.answer)
        title = ex.documents[doc - 1][0] if doc else hop.title
        fallback = hop.evidence if _mentions(hop.evidence, hop.answer) or not doc else ""
        evidence = _evidence(ex, doc, hop.answer, fallback) or hop.evidence
        question = _fill_refs(hop.question, [s.answer for s in steps])
        steps.append(_Step(_hop_vp(question), hop.answer, doc, title, evidence))
    return steps


def _support_groups(ex: Example) -> dict[str, list[str]]:
    """Supporting sentences by title; where sentences are not annotated, the sentence stating the
    answer (or the first) of each supporting document, or of the document that states the answer."""
    groups: dict[str, list[str]] = {}
    for title, sentence in ex.supporting_sentences:
        groups.setdefault(title, []).append(" ".join(sentence.split()))
    if groups:
        return groups
    stating = [t for t, text in ex.documents if _mentions(text, ex.answer)]
    for title in ex.supporting_titles or stating[:1]:
        doc = _ground(ex, title, ex.answer)
        groups[title] = [_evidence(ex, doc, ex.answer, "")] if doc else []
    return groups


def _order_titles(ex: Example, groups: dict[str, list[str]]) -> list[str]:
    """Bridge: a title named in another group's sentences and the group stating the answer come
    later. Comparison: the order in which the question names the entities."""
    titles = list(groups)
    if _is_comparison(ex):
        q = ex.question.lower()
        return sorted(titles, key=lambda t: q.find(t.lower()) % (len(q) + 1))

    def key(title: str) -> tuple[int, int]:
        named = any(_mentions(" ".join(s), title) for t, s in groups.items() if t != title)
        return (int(_mentions(" ".join(groups[title]), ex.answer)), int(named))

    return sorted(titles, key=key)


def _steps_from_support(ex: Example) -> list[_Step]:
    groups = _support_groups(ex)
    titles = _order_titles(ex, groups)
    steps = []
    for k, title in enumerate(titles):
        evidence = " ".join(groups[title])
        doc = _titled_doc(ex, title, evidence)
        last = k == len(titles) - 1
        nxt = titles[k + 1] if not last else ""
        if _is_comparison(ex):
            answer, vp = "", f"get what Document [{doc}] says about {title}"
        elif last:
            answer = ex.answer if _mentions(evidence, ex.answer) else ""
            vp = f"read Document [{doc}] on {title} for the fact the question asks about"
        else:
            answer = nxt if _mentions(evidence, nxt) else ""
            vp = f"use Document [{doc}] on {title} to identify the entity that leads onward"
        if not doc:
            vp = vp.replace("Document [0]", "the document")
        steps.append(_Step(vp, answer, doc, title, evidence))
    return steps


def _steps(ex: Example) -> list[_Step]:
    return _steps_from_hops(ex) if ex.hops else _steps_from_support(ex)


# --------------------------------------------------------------------------------------------------
# Wording. Several phrasings per phase, each carrying a cue `detect_phases` reads.

_GOAL = (
    'The question asks: "{q}" Before reading closely, we sort the documents into the ones that '
    "bear on it and the rest.",
    'We are asked: "{q}" Our first job is to work out which documents actually matter here.',
    'The goal is to answer "{q}" So we start by deciding which documents we need.',
    'What we need to find: the answer to "{q}" Not every document listed will help.',
    'The task is this question: "{q}" We begin by separating useful documents from noise.',
)
_RELEVANT = (
    "The ones that matter are {rel}.",
    "The relevant material sits in {rel}.",
    "We only need {rel}.",
    "We will rely on {rel}.",
)
_DISTRACT = (
    "We set aside {dis}: they are distractors here.",
    "{dis_cap}: none of these is relevant to what is asked, so we can ignore them.",
    "The rest look like distractors ({dis}), and we put them aside.",
    "Documents such as {dis} share a word or a theme at most; they are irrelevant, so we set "
    "them aside.",
)
_NO_DISTRACT = (
    "There are no distractor documents to set aside this time.",
    "Every document seems to bear on the question, so there is nothing to set aside.",
)
_PLAN_LEAD = (
    "Our plan has {n} steps.",
    "We plan the route before reading in detail.",
    "The approach is to follow the chain one hop at a time.",
    "We break the question into {n} sub-questions.",
    "Strategy: take the pieces in order, each from its own document.",
)
_FOUND = (
    "This gives us {a}.",
    "So this step yields {a}.",
    "That tells us what this hop needs: {a}.",
    "We now have {a}.",
    "So the finding here is {a}.",
)
_NOTED = (
    "That is the piece of the chain that {t} supplies.",
    "We note this fact about {t}.",
    "This is what we need to know about {t}.",
    "So we now know this much about {t}.",
)
_EXEC = (
    '{ref} states: "{ev}"',
    'According to {ref}, "{ev}"',
    'We look at {ref}. It says that "{ev}"',
    'For this step we turn to {ref}: "{ev}"',
    'Reading {ref}, we find: "{ev}"',
)
_LINK_OK = (
    "This fits the previous step: {ref} mentions {prev}, the entity we just found.",
    "We check that this connects to what we already have: {prev} appears here, so the link holds.",
    "That is consistent with the earlier hop, since it picks up exactly from {prev}.",
    "Good: the document names {prev}, so we are still on the same chain.",
)
_LINK_SOFT = (
    "We keep in mind that this has to connect to {prev} from the previous step.",
    "This builds on {prev}, which we found a step earlier.",
    "We make sure this continues from {prev} before moving on.",
)
_LINK_CMP = (
    "Now we have the same kind of fact for {t} as for {prev}, so the two can be compared.",
    "This gives the matching fact for {t}, which we can set against what we found for {prev}.",
    "With {t} covered as well as {prev}, both sides of the comparison are in hand.",
)
_PITFALL_DISTRACTOR = (
    "Wait, {dref} also mentions {w}, and at first it seems to answer this step. On closer "
    "reading it is about {dt}, not {t}, so we keep {ref} and drop that lead.",
    "At first glance {dref} looks like a match because it mentions {w} too. That was a "
    "mistake: it describes {dt}, which is not the entity in our chain. We stay with {ref}.",
    "We almost took {dref} for this step, since it also talks about {w}. But that document is "
    "about {dt}; the step needs {t}, so instead we rely on {ref}.",
)
_PITFALL_BRIDGE = (
    "Wait, {b} is not the answer yet. It is only the link between the documents, and we still "
    "have to {vp}.",
    "It would be a mistake to stop at {b}: that is the intermediate entity, not what the "
    "question asks for. We still have to {vp}.",
    "Actually, finding {b} does not finish the job. {b} is the bridge, and we still have to {vp}.",
)
_PITFALL_COMPARE = (
    "Wait, we should not decide by whichever document we happened to read first. The "
    "comparison has to rest on the facts from {ra} and {rb}, so we line them up before choosing.",
    "We nearly answered from what we know about {a} alone. That is not quite right: the "
    "question is about both, and the deciding fact for {b} comes from {rb}.",
    "One mistake would be to compare {a} and {b} on different properties. Instead we take the "
    "same property for both, from {ra} and {rb}.",
)
_PITFALL_REREAD = (
    "Wait, before accepting this we re-read {ref}: it is about {t} itself and not about some "
    "other entity with a similar name, so the reading stands.",
    "At first we might take the document's title for the answer, but that is not quite what "
    "is asked; on closer reading of {ref} the relevant detail is in the sentence itself.",
)
_COMPARE = (
    "Now we compare {a} and {b} on what the question asks. Setting the two facts side by side, "
    "the answer is {ans}.",
    "With both facts in hand we compare them directly, and the answer comes out as {ans}.",
    "Putting {a} and {b} side by side, the comparison settles it: the answer is {ans}.",
)
_VERIFY = (
    "Let us verify the chain against the question: {chain}. Each link is backed by a document, "
    "and it answers exactly what is asked, so the answer is {ans}.",
    "A final check: {chain}. This is consistent with every document we used and meets every "
    "constraint in the question, so we stop here. The answer is {ans}.",
    "To double-check, we re-trace the steps: {chain}. It matches what the question asks, so the "
    "answer is {ans}.",
    "We confirm the result once more: {chain}. All of it is supported and it satisfies the "
    "question. The answer is {ans}.",
)
_WRONG_ANSWER = (
    "We were about to settle on {wrong}. Wait, that does not hold up: {src}{ref} says "
    '"{ev}", which leads to {gold}, not {wrong}.',
    "Our first inclination was {wrong}. On closer reading that is wrong: {src}{ref} states "
    '"{ev}", so the chain ends at {gold}.',
    'Something is inconsistent if we answer {wrong}: {src}{ref} says "{ev}". We correct this '
    "and follow the chain to {gold} instead.",
)
_WRONG_SOURCE = (
    "that name comes from {dref}, which is not part of our chain, while ",
    "{dref} is where {wrong} comes from, and it is a distractor; meanwhile ",
)
_WRONG_ENTITY = (
    "For a moment {dt} looks like the entity we want here. Wait, {dref} is a distractor: the "
    'step needs {t}, and {ref} says "{ev}".',
    "We are tempted to follow {dt} at this point, but that would be a mistake: {dref} is not "
    'about our entity. Instead, {ref} says "{ev}".',
)
_LOOP = (
    "Wait, we are going over the same step again. The evidence from {ref} already settles it, so "
    "instead of re-reading we move on to checking the result.",
    "We notice we are circling back to something already established. That was unnecessary: "
    "{ref} settles it, so we stop repeating and check the result.",
)
_CONFIRM = (
    '{ref} confirms this: "{ev}"',
    'We check it against {ref}, which says "{ev}"; it matches.',
    'This is backed by {ref}: "{ev}"',
)
_CONFIRM_SHORT = (
    "That is what {ref} states.",
    "{ref} says exactly this.",
    "We check this against {ref}, and it matches.",
)

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# What each terseness level keeps: (quoted evidence words, named distractors, monitoring sentences,
# full "Document [i] (Title: t)" citations in execution). Level 0 is the normal trace; 1 and 2 are
# the retries after an over-budget rejection.
_CLIP_WORDS = 30  # concise style: longest evidence quote, in words
_TERSE = ((45, 6, True, True), (25, 3, True, True), (12, 1, False, False))


def _pick(rng: random.Random, pool: tuple[str, ...], **slots: str) -> str:
    text = rng.choice(pool).format(**slots)
    return text.replace('.".', '."').replace('?".', '?"').replace('!".', '!"')


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _ref(ex: Example, doc: int, title: str = "") -> str:
    """Full citation, as the student's prompt lists documents."""
    if doc:
        return f"Document [{doc}] (Title: {ex.documents[doc - 1][0]})"
    return f"the document on {title}" if title else "the documents"


def _short(doc: int, title: str) -> str:
    return f"Document [{doc}]" if doc else f"the document on {title}"


def _quote(text: str, words: int, focus: str = "") -> str:
    """At most `words` words of the evidence, as a quote; the sentence naming `focus` (the step's
    finding) is preferred, and a cut keeps the words around it so the quote still shows it."""
    sentences = split_sentences(text) or [text]
    named = [s for s in sentences if _mentions(s, focus)]
    parts = " ".join(named or sentences).replace('"', "'").split()
    if len(parts) <= words:
        return " ".join(parts)
    start = 0
    if focus:
        head = focus.split()[0].lower()
        at = next((i for i, w in enumerate(parts) if w.lower().startswith(head)), 0)
        start = max(0, min(at - words // 2, len(parts) - words))
    lead, tail = ("... " if start else ""), (" ..." if start + words < len(parts) else "")
    return lead + " ".join(parts[start : start + words]) + tail


def _number(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


# --------------------------------------------------------------------------------------------------
# Paragraph writers shared by MBT-S and MBT-R


def _understanding(ex: Example, steps: list[_Step], rng: random.Random, terse: int) -> str:
    relevant = list(dict.fromkeys(s.doc for s in steps if s.doc))
    parts = [_pick(rng, _GOAL, q=" ".join(ex.question.split()))]
    if relevant:
        refs = [_ref(ex, d) for d in relevant]
        parts.append(_pick(rng, _RELEVANT, rel=_join(refs)))
    counts = Counter(t for t, _ in ex.documents)
    others = [
        f'"{t}"' if counts[t] == 1 else f'Document [{i}] ("{t}")'
        for i, (t, _) in enumerate(ex.documents, 1)
        if i not in relevant
    ]
    if not others:
        parts.append(_pick(rng, _NO_DISTRACT))
        return " ".join(parts)
    limit = _TERSE[terse][1]
    named = sorted(rng.sample(range(len(others)), min(limit, len(others))))
    names = [others[i] for i in named]
    rest = len(others) - len(names)
    if rest:
        names.append(f"{_number(rest)} other document{'s' if rest > 1 else ''}")
    dis = _join(names)
    parts.append(_pick(rng, _DISTRACT, dis=dis, dis_cap=dis[:1].upper() + dis[1:]))
    return " ".join(parts)


def _options(ex: Example, steps: list[_Step]) -> list[str]:
    """The two things a comparison question weighs: step titles the question names, in order."""
    titles = list(dict.fromkeys(s.title for s in steps if s.title))
    named = [t for t in titles if _mentions(ex.question, t)]
    return (named + [t for t in titles if t not in named])[:2]


def _plan_items(ex: Example, steps: list[_Step]) -> list[str]:
    items = [s.vp for s in steps]
    if _is_comparison(ex) and len(steps) >= 2:
        a, b = (_options(ex, steps) + ["the first", "the second"])[:2]
        items.append(f"compare {a} and {b} on what the question asks")
    return items or ["find the document that speaks to the question and read off what it asks"]


def _planning(ex: Example, steps: list[_Step], rng: random.Random) -> str:
    items = _plan_items(ex, steps)
    lead = _pick(rng, _PLAN_LEAD, n=_number(len(items)))
    style = rng.randrange(3)
    if style == 0:
        heads = ["First, we"] + ["Then we"] * max(0, len(items) - 2) + ["Finally, we"]
        body = " ".join(f"{h} {vp}." for h, vp in zip(heads[: len(items)], items, strict=False))
        if len(items) == 1:
            body = f"First, we {items[0]}."
    elif style == 1:
        body = " ".join(f"Step {k}: {vp}." for k, vp in enumerate(items, 1))
    else:
        joins = ["To begin, we"] + ["next we"] * max(0, len(items) - 2) + ["and last, we"]
        body = "; ".join(f"{h} {vp}" for h, vp in zip(joins, items, strict=False)) + "."
        if len(items) == 1:
            body = f"To begin, we {items[0]}, then we check it."
    return f"{lead} {body}"


def _link_from(steps: list[_Step], k: int) -> int | None:
    """The latest earlier step whose finding this step builds on (its title, text or question)."""
    step = steps[k]
    for j in range(k - 1, -1, -1):
        found = steps[j].answer
        if found and any(_mentions(x, found) for x in (step.title, step.vp, step.evidence)):
            return j
    return None


def _monitor(ex: Example, steps: list[_Step], k: int, rng: random.Random) -> str:
    step, j = steps[k], _link_from(steps, k)
    if j is not None:
        prev, text = steps[j].answer, f"{step.title} {step.evidence}"
        pool = _LINK_OK if _mentions(text, prev) else _LINK_SOFT
        return _pick(rng, pool, ref=_short(step.doc, step.title), prev=prev)
    prev = steps[k - 1]
    if _is_comparison(ex):
        return _pick(rng, _LINK_CMP, t=step.title, prev=prev.title)
    return _pick(rng, _LINK_SOFT, prev=prev.answer or prev.title)


def _execution(
    ex: Example, steps: list[_Step], k: int, rng: random.Random, terse: int, lead: str = ""
) -> str:
    """One hop: (the draft's own words, if any) the cited sentence, the finding, and a check
    against earlier findings."""
    step = steps[k]
    words, _, monitoring, full = _TERSE[terse]
    ev = _quote(step.evidence, words, step.answer) if step.evidence else ""
    ref = _ref(ex, step.doc, step.title) if full else _short(step.doc, step.title)
    if lead and (not ev or _restates(_content(lead), _content(step.evidence))):
        parts = [lead, _pick(rng, _CONFIRM_SHORT, ref=ref)]
    elif lead:
        parts = [lead, _pick(rng, _CONFIRM, ref=ref, ev=ev)]
    else:
        parts = [_pick(rng, _EXEC, ref=ref, ev=ev)] if ev else [f"We turn to {ref}."]
    if step.answer and not (lead and _mentions(lead, step.answer)):
        parts.append(_pick(rng, _FOUND, a=step.answer))
    elif not step.answer:
        parts.append(_pick(rng, _NOTED, t=step.title or "this document"))
    if k > 0 and monitoring:
        parts.append(_monitor(ex, steps, k, rng))
    return " ".join(parts)


def _option_fact(steps: list[_Step], option: str) -> str:
    """The last finding on the chain that starts at this option's step (2Wiki: director -> date)."""
    k = next((i for i, s in enumerate(steps) if s.title == option), None)
    if k is None:
        return ""
    fact = steps[k].answer
    for j in range(k + 1, len(steps)):
        if _link_from(steps, j) == k:
            k, fact = j, steps[j].answer
    return fact


def _comparison(ex: Example, steps: list[_Step], rng: random.Random) -> str:
    a, b = (_options(ex, steps) + ["the first", "the second"])[:2]
    text = _pick(rng, _COMPARE, a=a, b=b, ans=ex.answer)
    fa, fb = _option_fact(steps, a), _option_fact(steps, b)
    if fa and fb and _norm(fa) != _norm(fb):
        text = f"For {a} we have {fa}; for {b}, {fb}. {text}"
    return text


def _chain(steps: list[_Step]) -> str:
    parts = [
        f"{_short(s.doc, s.title)} gives {s.answer}"
        if s.answer
        else f"{_short(s.doc, s.title)} covers {s.title}"
        for s in steps
    ]
    return ", then ".join(parts) if parts else "the documents point one way"


def _verification(ex: Example, steps: list[_Step], rng: random.Random) -> str:
    return _pick(rng, _VERIFY, chain=_chain(steps), ans=ex.answer)


# --------------------------------------------------------------------------------------------------
# MBT-S pitfalls: one plausible mistake per trace, grounded in this example's documents

_CAPITALISED = re.compile(r"\b[A-Z][\w'-]{3,}\b")
# Capitalised words that are not names (sentence openers), so never a "shared name".
_NOT_NAMES = _wordset(
    """What Which Where When Whose While After Before During Since From With Into Does Have This
    That There These Those They Were Their Document Title Also However Although"""
)


def _names(text: str) -> set[str]:
    return {w for w in _CAPITALISED.findall(text) if w not in _NOT_NAMES}


def _lookalikes(ex: Example, steps: list[_Step]) -> list[int]:
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
        and not any(_mentions(t, f) or _mentions(f, t) for f in findings)
    ]


def _pitfall_distractor(
    ex: Example, steps: list[_Step], rng: random.Random
) -> tuple[int, str] | None:
    """A non-gold document that shares a name with a step: the look-alike a reader could grab."""
    others = _lookalikes(ex, steps)
    found: list[tuple[int, int, str, bool]] = []  # (step, document, shared name, in its title)
    for k, step in enumerate(steps):
        names = _names(f"{step.title} {step.answer}") if step.doc else set()
        for i in others:
            title, text = ex.documents[i - 1]
            for w in sorted(names & _names(f"{title} {text}")):
                found.append((k, i, w, w in title))
    if not found:
        return None
    titled = [f for f in found if f[3]]
    k, i, w, _ = rng.choice(titled or found)
    step = steps[k]
    text = _pick(
        rng,
        _PITFALL_DISTRACTOR,
        dref=_ref(ex, i),
        w=w,
        dt=ex.documents[i - 1][0],
        t=step.title,
        ref=_short(step.doc, step.title),
    )
    return k, text


def _pitfall_bridge(ex: Example, steps: list[_Step], rng: random.Random) -> tuple[int, str] | None:
    """Stopping at the bridge entity: the answer-inclusive error's mirror image."""
    options = [
        j
        for k in range(1, len(steps))
        if (j := _link_from(steps, k)) is not None and not _mentions(steps[j].answer, ex.answer)
    ]
    if not options:
        return None
    j = rng.choice(sorted(set(options)))
    nxt = next(k for k in range(j + 1, len(steps)) if _link_from(steps, k) == j)
    return j, _pick(rng, _PITFALL_BRIDGE, b=steps[j].answer, vp=steps[nxt].vp)


def _pitfall_compare(ex: Example, steps: list[_Step], rng: random.Random) -> tuple[int, str] | None:
    """Deciding a comparison from one side only."""
    if not _is_comparison(ex) or len(steps) < 2:
        return None
    a, b = (_options(ex, steps) + ["the first", "the second"])[:2]
    by_title = {s.title: s for s in steps}
    sa, sb = by_title.get(a, steps[0]), by_title.get(b, steps[1])
    text = _pick(
        rng, _PITFALL_COMPARE, a=a, b=b, ra=_short(sa.doc, sa.title), rb=_short(sb.doc, sb.title)
    )
    return len(steps) - 1, text


def _pitfall(ex: Example, steps: list[_Step], rng: random.Random) -> tuple[int, str]:
    """(step index after which it goes, paragraph)."""
    candidates = [
        p
        for f in (_pitfall_distractor, _pitfall_bridge, _pitfall_compare)
        if (p := f(ex, steps, rng)) is not None
    ]
    if candidates:
        return rng.choice(candidates)
    last = steps[-1] if steps else _Step("", "", 0, "", "")
    ref = _ref(ex, last.doc, last.title) if steps else "the documents"
    return max(0, len(steps) - 1), _pick(rng, _PITFALL_REREAD, ref=ref, t=last.title or "it")


# --------------------------------------------------------------------------------------------------
# MBT-R: reading the student's draft

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
_STOP = _wordset(
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


def _split_draft(draft: str | None) -> tuple[str, str]:
    """(reasoning without tags, the draft's final answer or "")."""
    text = draft or ""
    final = extract_answer(text)
    body = re.sub(r"(?is)</?(think|answer)>", " ", split_trace(text))
    if final is None:
        said = list(re.finditer(r"(?i)answer is:?\s*([^\n.]{1,80})", body))
        final = said[-1].group(1) if said else ""
    return body, final.strip()


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2 and w not in _STOP}


def _dedupe(sentences: list[str]) -> tuple[list[str], int]:
    """Drop repeats and near-repeats (a loop restating itself); count what was dropped."""
    kept: list[str] = []
    seen: list[set[str]] = []
    dropped = 0
    for s in sentences:
        words = _content(s)
        if any(words and len(words & w) >= 0.8 * len(words | w) for w in seen) or (
            not words and any(_norm(s) == _norm(k) for k in kept)
        ):
            dropped += 1
            continue
        kept.append(s)
        seen.append(words)
    return kept, dropped


def _matches_gold(candidate: str, ex: Example) -> bool:
    c = _norm(candidate)
    return bool(c) and any(
        g and (c == g or f" {g} " in f" {c} " or f" {c} " in f" {g} ")
        for g in map(_norm, ex.answers)
    )


def _relevant_docs(steps: list[_Step]) -> set[int]:
    return {s.doc for s in steps if s.doc}


@dataclass
class _Slip:
    """Where the draft went wrong: a non-gold final answer, or a distractor entity it followed."""

    kind: Literal["answer", "entity"]
    text: str
    doc: int  # the distractor document it comes from, 0 if none
    sentence: str = ""  # the draft's sentence that took the wrong turn


# Final answers that commit to nothing: there is no wrong turn to correct, only a missing answer.
_NON_ANSWERS = {"", "unknown", "none", "i dont know", "not sure", "cannot be determined", "na"}


def _slip(ex: Example, steps: list[_Step], sentences: list[str], final: str) -> _Slip | None:
    relevant = _relevant_docs(steps)
    distractors = [
        (i, t) for i in _lookalikes(ex, steps) if len(_norm(t := ex.documents[i - 1][0])) >= 5
    ]
    committed = _norm(final) not in _NON_ANSWERS and len(final.split()) <= 12
    if committed and not _matches_gold(final, ex):
        others = [i for i, (_, text) in enumerate(ex.documents, 1) if i not in relevant]
        src = next((i for i in others if _mentions(ex.documents[i - 1][1], final)), 0)
        return _Slip("answer", final, src)
    negative = ("not", "irrelevant", "ignore", "unrelated", "distractor", "set aside")
    for s in sentences:
        if any(n in s.lower() for n in negative):
            continue
        for i, title in distractors:
            if _mentions(s, title) and not any(_mentions(s, x.title) for x in steps if x.title):
                return _Slip("entity", title, i, s)
    return None


def _restates(words: set[str], said: set[str]) -> bool:
    """Most of the sentence's content was already said: a restatement, not a new finding."""
    return bool(words) and len(words & said) >= 0.6 * len(words)


def _step_of(sentence: str, steps: list[_Step], start: int) -> int | None:
    """The step a draft sentence reports: the latest finding it states, else the first step (from
    `start` on) whose entity it names."""
    found = [j for j in range(start, len(steps)) if _mentions(sentence, steps[j].answer)]
    if found:
        return found[-1]
    return next((j for j in range(start, len(steps)) if _mentions(sentence, steps[j].title)), None)


def _draft_facts(
    ex: Example, steps: list[_Step], sentences: list[str], slip: _Slip | None
) -> dict[int, list[str]]:
    """The draft's sentences worth keeping, by step: each names a step's finding or entity and
    overlaps a supporting document; none repeats doubt or the slip; nothing after the answer."""
    support = set().union(*(_content(ex.documents[s.doc - 1][1]) for s in steps if s.doc))
    facts: dict[int, list[str]] = {}
    said: set[str] = set()
    pointer = 0
    for s in sentences:
        low, words = s.lower(), _content(s)
        noisy = any(n in low for n in _NOISE) or not 4 <= len(s.split()) <= 60
        if noisy or leaked_phrases(s, ex) or (slip and _mentions(s, slip.text)):
            continue
        if len(words & support) < max(2, 0.4 * len(words)) or _restates(words, said):
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


def _answer_step(ex: Example, steps: list[_Step]) -> _Step | None:
    """The step whose evidence states the gold answer; the last step otherwise."""
    last = steps[-1] if steps else None
    return next((s for s in steps if _mentions(s.evidence, ex.answer)), last)


def _slip_step(steps: list[_Step], slip: _Slip) -> int:
    """The step a wrong turn belongs to: the final one for a wrong answer; for a wrong entity, the
    step whose sub-question and evidence share most words with the sentence that took it."""
    if slip.kind == "answer":
        return len(steps) - 1
    words = _content(slip.sentence)
    overlap = [len(words & _content(f"{s.vp} {s.evidence}")) for s in steps]
    return overlap.index(max(overlap))


def _correction(
    ex: Example, steps: list[_Step], slip: _Slip, rng: random.Random, terse: int
) -> str:
    """Discover the draft's error at a document, rather than silently replacing it. The quote is
    the few words around the finding: the execution paragraph already quoted the sentence."""
    words = min(_TERSE[terse][0], 16)
    if slip.kind == "entity":
        step = steps[_slip_step(steps, slip)]
        ev = _quote(step.evidence, words, step.answer)
        ref = _ref(ex, step.doc, step.title)
        return _pick(
            rng, _WRONG_ENTITY, dt=slip.text, dref=_ref(ex, slip.doc), t=step.title, ref=ref, ev=ev
        )
    step = _answer_step(ex, steps)
    src = _pick(rng, _WRONG_SOURCE, dref=_ref(ex, slip.doc), wrong=slip.text) if slip.doc else ""
    ref = _ref(ex, step.doc, step.title) if step else "the documents"
    ev = _quote(step.evidence, words, step.answer) if step else ""
    return _pick(rng, _WRONG_ANSWER, wrong=slip.text, src=src, ref=ref, ev=ev, gold=ex.answer)


# --------------------------------------------------------------------------------------------------
# The teacher


def _concise(ex: Example, steps: list[_Step], rng: random.Random, slip: _Slip | None) -> str:
    """The five phases in one short line each, quoting the evidence: for students that copy well
    but must learn to stop, where a long monologue would teach length instead of regulation.
    Quotes are clipped just after the step's finding: a small student copying a 150-word infobox
    drifts or hits the length cap, and the answer it must extract should sit at the end of what
    it just copied. MBT-R names the draft's slip when it is a name, not a garbled sentence."""
    lines = [f"We need to find: {ex.question}", f"Plan: {len(steps) or 'a few'} hops."]
    last = len(steps) - 1
    lines += [_clip(s.evidence, ex.answer if k == last else s.answer) for k, s in enumerate(steps)]
    # a yes/no answer counts only as a statement ("the answer is no"): "no" is in every trace
    says = "So the answer is" if _is_yes_no(ex) else "This gives"
    lines[-1] += f" {says} {ex.answer}."
    if slip is not None and _nameable(slip.text, ex):
        lines.append(f"Wait, not {slip.text}: the chain does not lead there.")
    else:
        others = _lookalikes(ex, steps)
        title = ex.documents[rng.choice(others) - 1][0] if others else "another document"
        lines.append(f"Wait, {title} is not on the chain.")
    lines.append(f"Check: {ex.answer} fits.")
    return "\n".join(lines)


def _clip(evidence: str, focus: str, words: int = _CLIP_WORDS) -> str:
    """The evidence sentence naming `focus` (the first sentence without one), cut after the
    focus when longer than `words`; the words around it when the focus comes late."""
    sentences = split_sentences(evidence) or [evidence]
    sentence = next((s for s in sentences if focus and _mentions(s, focus)), sentences[0])
    parts = sentence.split()
    if len(parts) <= words:
        return sentence
    end = _end_of(parts, focus) if focus else words
    if end is None or end > words:
        return _quote(sentence, words, focus)
    return " ".join(parts[: max(end, words // 2)]) + " ..."


def _end_of(parts: list[str], phrase: str) -> int | None:
    """The number of words up to and including the first occurrence of `phrase` in `parts`,
    matched word by word after normalisation (articles and punctuation drop out on both sides)."""
    target = _norm(phrase).split()
    kept = [(i, _norm(w)) for i, w in enumerate(parts)]
    kept = [(i, w) for i, w in kept if w]
    words = [w for _, w in kept]
    for j in range(len(words) - len(target) + 1):
        if target and words[j : j + len(target)] == target:
            return kept[j + len(target) - 1][0] + 1
    return None


def _nameable(text: str, ex: Example) -> bool:
    """Whether a draft's wrong turn reads as a name to reject: short, and not the question's own
    words (a garbled draft's "slip" is often a clause of the question), nor its own boilerplate
    ("The answer is:")."""
    short = 0 < len(text.split()) <= 6 and _norm(text) not in _norm(ex.question)
    return short and not re.search(r"(?i)\banswer\b", text)


def _draft_slip(ex: Example, steps: list[_Step], draft: str | None) -> _Slip | None:
    """The draft's error for the short styles (None for MBT-S, which has no draft): its deduped
    sentences and final answer, judged against the gold chain."""
    if draft is None:
        return None
    body, final = _split_draft(draft)
    return _slip(ex, steps, _dedupe(split_sentences(body))[0], final)


def _in_student_words(ex: Example, slip: _Slip | None) -> str:
    """MBT-R for a student with a fixed line style (the world student): its own clean lines (goal
    and plan, one line per hop, the answer) and then one check that names a wrong final answer
    as the mistake, or finds none, and stops. SFT thus moves the decision after the first answer
    instead of teaching new wording the student would have to learn to read with."""
    wrong = f"{slip.text} was wrong" if slip is not None else "no mistake"
    return "\n".join([*clean_lines(ex), f"Check: {wrong}, {ex.answer} fits."])


def _assemble(
    ex: Example,
    steps: list[_Step],
    rng: random.Random,
    terse: int,
    head: list[str],
    after: int,
    pitfall: str,
    facts: dict[int, list[str]],
) -> str:
    """The shared body of MBT-S and MBT-R: one execution paragraph per hop (led by the draft's
    kept findings for MBT-R), the pitfall or correction after hop `after`, then verification."""
    paragraphs = list(head)
    for k in range(len(steps)):
        lead = " ".join(facts.get(k, []))
        paragraphs.append(_execution(ex, steps, k, rng, terse, lead=lead))
        if k == after:
            paragraphs.append(pitfall)
    if not steps:
        paragraphs.append(pitfall)
    if _is_comparison(ex) and len(steps) >= 2:
        paragraphs.append(_comparison(ex, steps, rng))
    paragraphs.append(_verification(ex, steps, rng))
    return "\n\n".join(paragraphs)


class StructuredTeacher:
    """Rule-based MBT teacher over gold annotations; deterministic per (seed, example, mode)."""

    backend = "structured"

    def __init__(
        self,
        seed: int = 0,
        budget_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        max_tries: int = 3,
        style: str = "full",
    ) -> None:
        if max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)} (got {style!r})")
        self.style = style
        self.seed = seed
        self.budget_tokens = budget_tokens
        self.count_tokens = count_tokens or count_words
        self.max_tries = max_tries

    def synthesize(self, ex: Example, rng: random.Random, terse: int = 0) -> str:
        """MBT-S: a five-phase monologue from the gold chain, with one grounded pitfall.

        `terse` (0-2) shortens quotes, distractor lists, citations and monitoring: the retry path
        when a trace is over budget.
        """
        steps = _steps(ex)
        head = [_understanding(ex, steps, rng, terse), _planning(ex, steps, rng)]
        after, pitfall = _pitfall(ex, steps, rng)
        return _assemble(ex, steps, rng, terse, head, after, pitfall, {})

    def rewrite(self, ex: Example, draft: str, rng: random.Random, terse: int = 0) -> str:
        """MBT-R: keep the draft's supported findings, drop its loops and restatements, turn its
        error (if any) into an explicit self-correction at a document, end with verification."""
        steps = _steps(ex)
        body, final = _split_draft(draft)
        sentences, dropped = _dedupe(split_sentences(body))
        slip = _slip(ex, steps, sentences, final)
        facts = _draft_facts(ex, steps, sentences, slip)
        head = [_understanding(ex, steps, rng, terse), _planning(ex, steps, rng)]
        after, pitfall = _pitfall(ex, steps, rng)
        if slip and steps:
            after, pitfall = _slip_step(steps, slip), _correction(ex, steps, slip, rng, terse)
        elif dropped >= 2 and facts:
            k = max(facts)
            ref = _ref(ex, steps[k].doc, steps[k].title)
            after, pitfall = k, _pick(rng, _LOOP, ref=ref)
        return _assemble(ex, steps, rng, terse, head, after, pitfall, facts)

    def concise(self, ex: Example, draft: str | None, rng: random.Random) -> str:
        """Concise style: MBT-S when `draft` is None, else MBT-R correcting the draft's slip."""
        steps = _steps(ex)
        return _concise(ex, steps, rng, _draft_slip(ex, steps, draft))

    def student_words(self, ex: Example, draft: str | None) -> str:
        """Student style: the world student's own lines (MBT-S: no slip to name); examples it
        cannot write (real data) fall back to the concise style."""
        if not is_world_question(ex):
            return self.concise(ex, draft, random.Random(f"{self.seed}|{ex.id}"))
        slip = _draft_slip(ex, _steps(ex), draft)
        # only a wrong final answer is named: a detour through a distractor is simply cut
        return _in_student_words(ex, slip if slip and slip.kind == "answer" else None)

    def teach(self, requests: list[TeachRequest]) -> list[TeachResult]:
        """Write and verify one trace per request; retry a rejected one with a fresh draw (and
        a terser one after an over-budget rejection) up to `max_tries`."""
        return [self._teach_one(r) for r in requests]

    def _write(self, req: TeachRequest, rng: random.Random, terse: int) -> str:
        if self.style == "student" and req.mode in ("mbt-s", "mbt-r"):
            return self.student_words(req.example, req.draft if req.mode == "mbt-r" else None)
        if self.style == "concise" and req.mode in ("mbt-s", "mbt-r"):
            return self.concise(req.example, req.draft if req.mode == "mbt-r" else None, rng)
        if req.mode == "mbt-s":
            return self.synthesize(req.example, rng, terse)
        if req.mode == "mbt-r":
            return self.rewrite(req.example, req.draft or "", rng, terse)
        raise ValueError(f"unknown teacher mode {req.mode!r}; expected 'mbt-s' or 'mbt-r'")

    def _teach_one(self, req: TeachRequest) -> TeachResult:
        ex, terse = req.example, 0
        trace, reasons = None, ["empty"]
        for attempt in range(self.max_tries):
            rng = random.Random(f"{self.seed}|{ex.id}|{req.mode}|{attempt}")
            trace = self._write(req, rng, terse)
            verdict = verify(trace, ex, self.budget_tokens, self.count_tokens)
            if verdict.ok:
                return self._result(req, trace, True, [], attempt + 1)
            reasons = verdict.reasons
            if "over_budget" in reasons:
                terse = min(terse + 1, len(_TERSE) - 1)
        return self._result(req, trace, False, reasons, self.max_tries)

    def _result(
        self, req: TeachRequest, trace: str | None, ok: bool, reasons: list[str], tries: int
    ) -> TeachResult:
        usage = {"completion_tokens": self.count_tokens(trace) if trace else 0}
        return TeachResult(req.example.id, req.mode, trace, ok, reasons, tries, self.backend, usage)
