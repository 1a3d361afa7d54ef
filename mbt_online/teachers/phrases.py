"""The teacher's wording: several phrasings per phase, each carrying a cue `detect_phases` reads,
and the small helpers that fill them in (citations, quotes, lists, numbers).

Several phrasings per phase so that a student trained on the traces learns the structure rather
than one memorised sentence. The order of the pools' entries is part of the output: a draw picks
by index, so reordering a pool changes every trace.
"""

from __future__ import annotations

import random

from mbt_online.scoring.text import mentions, split_sentences
from mbt_online.tasks.base import Example

GOAL = (
    'The question asks: "{q}" Before reading closely, we sort the documents into the ones that '
    "bear on it and the rest.",
    'We are asked: "{q}" Our first job is to work out which documents actually matter here.',
    'The goal is to answer "{q}" So we start by deciding which documents we need.',
    'What we need to find: the answer to "{q}" Not every document listed will help.',
    'The task is this question: "{q}" We begin by separating useful documents from noise.',
)
RELEVANT = (
    "The ones that matter are {rel}.",
    "The relevant material sits in {rel}.",
    "We only need {rel}.",
    "We will rely on {rel}.",
)
DISTRACT = (
    "We set aside {dis}: they are distractors here.",
    "{dis_cap}: none of these is relevant to what is asked, so we can ignore them.",
    "The rest look like distractors ({dis}), and we put them aside.",
    "Documents such as {dis} share a word or a theme at most; they are irrelevant, so we set "
    "them aside.",
)
NO_DISTRACT = (
    "There are no distractor documents to set aside this time.",
    "Every document seems to bear on the question, so there is nothing to set aside.",
)
PLAN_LEAD = (
    "Our plan has {n} steps.",
    "We plan the route before reading in detail.",
    "The approach is to follow the chain one hop at a time.",
    "We break the question into {n} sub-questions.",
    "Strategy: take the pieces in order, each from its own document.",
)
FOUND = (
    "This gives us {a}.",
    "So this step yields {a}.",
    "That tells us what this hop needs: {a}.",
    "We now have {a}.",
    "So the finding here is {a}.",
)
NOTED = (
    "That is the piece of the chain that {t} supplies.",
    "We note this fact about {t}.",
    "This is what we need to know about {t}.",
    "So we now know this much about {t}.",
)
EXEC = (
    '{ref} states: "{ev}"',
    'According to {ref}, "{ev}"',
    'We look at {ref}. It says that "{ev}"',
    'For this step we turn to {ref}: "{ev}"',
    'Reading {ref}, we find: "{ev}"',
)
LINK_OK = (
    "This fits the previous step: {ref} mentions {prev}, the entity we just found.",
    "We check that this connects to what we already have: {prev} appears here, so the link holds.",
    "That is consistent with the earlier hop, since it picks up exactly from {prev}.",
    "Good: the document names {prev}, so we are still on the same chain.",
)
LINK_SOFT = (
    "We keep in mind that this has to connect to {prev} from the previous step.",
    "This builds on {prev}, which we found a step earlier.",
    "We make sure this continues from {prev} before moving on.",
)
LINK_CMP = (
    "Now we have the same kind of fact for {t} as for {prev}, so the two can be compared.",
    "This gives the matching fact for {t}, which we can set against what we found for {prev}.",
    "With {t} covered as well as {prev}, both sides of the comparison are in hand.",
)
PITFALL_DISTRACTOR = (
    "Wait, {dref} also mentions {w}, and at first it seems to answer this step. On closer "
    "reading it is about {dt}, not {t}, so we keep {ref} and drop that lead.",
    "At first glance {dref} looks like a match because it mentions {w} too. That was a "
    "mistake: it describes {dt}, which is not the entity in our chain. We stay with {ref}.",
    "We almost took {dref} for this step, since it also talks about {w}. But that document is "
    "about {dt}; the step needs {t}, so instead we rely on {ref}.",
)
PITFALL_BRIDGE = (
    "Wait, {b} is not the answer yet. It is only the link between the documents, and we still "
    "have to {vp}.",
    "It would be a mistake to stop at {b}: that is the intermediate entity, not what the "
    "question asks for. We still have to {vp}.",
    "Actually, finding {b} does not finish the job. {b} is the bridge, and we still have to {vp}.",
)
PITFALL_COMPARE = (
    "Wait, we should not decide by whichever document we happened to read first. The "
    "comparison has to rest on the facts from {ra} and {rb}, so we line them up before choosing.",
    "We nearly answered from what we know about {a} alone. That is not quite right: the "
    "question is about both, and the deciding fact for {b} comes from {rb}.",
    "One mistake would be to compare {a} and {b} on different properties. Instead we take the "
    "same property for both, from {ra} and {rb}.",
)
PITFALL_REREAD = (
    "Wait, before accepting this we re-read {ref}: it is about {t} itself and not about some "
    "other entity with a similar name, so the reading stands.",
    "At first we might take the document's title for the answer, but that is not quite what "
    "is asked; on closer reading of {ref} the relevant detail is in the sentence itself.",
)
COMPARE = (
    "Now we compare {a} and {b} on what the question asks. Setting the two facts side by side, "
    "the answer is {ans}.",
    "With both facts in hand we compare them directly, and the answer comes out as {ans}.",
    "Putting {a} and {b} side by side, the comparison settles it: the answer is {ans}.",
)
VERIFY = (
    "Let us verify the chain against the question: {chain}. Each link is backed by a document, "
    "and it answers exactly what is asked, so the answer is {ans}.",
    "A final check: {chain}. This is consistent with every document we used and meets every "
    "constraint in the question, so we stop here. The answer is {ans}.",
    "To double-check, we re-trace the steps: {chain}. It matches what the question asks, so the "
    "answer is {ans}.",
    "We confirm the result once more: {chain}. All of it is supported and it satisfies the "
    "question. The answer is {ans}.",
)
WRONG_ANSWER = (
    "We were about to settle on {wrong}. Wait, that does not hold up: {src}{ref} says "
    '"{ev}", which leads to {gold}, not {wrong}.',
    "Our first inclination was {wrong}. On closer reading that is wrong: {src}{ref} states "
    '"{ev}", so the chain ends at {gold}.',
    'Something is inconsistent if we answer {wrong}: {src}{ref} says "{ev}". We correct this '
    "and follow the chain to {gold} instead.",
)
WRONG_SOURCE = (
    "that name comes from {dref}, which is not part of our chain, while ",
    "{dref} is where {wrong} comes from, and it is a distractor; meanwhile ",
)
WRONG_ENTITY = (
    "For a moment {dt} looks like the entity we want here. Wait, {dref} is a distractor: the "
    'step needs {t}, and {ref} says "{ev}".',
    "We are tempted to follow {dt} at this point, but that would be a mistake: {dref} is not "
    'about our entity. Instead, {ref} says "{ev}".',
)
LOOP = (
    "Wait, we are going over the same step again. The evidence from {ref} already settles it, so "
    "instead of re-reading we move on to checking the result.",
    "We notice we are circling back to something already established. That was unnecessary: "
    "{ref} settles it, so we stop repeating and check the result.",
)
CONFIRM = (
    '{ref} confirms this: "{ev}"',
    'We check it against {ref}, which says "{ev}"; it matches.',
    'This is backed by {ref}: "{ev}"',
)
CONFIRM_SHORT = (
    "That is what {ref} states.",
    "{ref} says exactly this.",
    "We check this against {ref}, and it matches.",
)

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# What each terseness level keeps: (quoted evidence words, named distractors, monitoring sentences,
# full "Document [i] (Title: t)" citations in execution). Level 0 is the normal trace; 1 and 2 are
# the retries after an over-budget rejection.
TERSE = ((45, 6, True, True), (25, 3, True, True), (12, 1, False, False))


def pick(rng: random.Random, pool: tuple[str, ...], **slots: str) -> str:
    """One phrasing of the pool, filled in; a quote ending a sentence keeps one full stop."""
    text = rng.choice(pool).format(**slots)
    return text.replace('.".', '."').replace('?".', '?"').replace('!".', '!"')


def join_and(items: list[str]) -> str:
    """ "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def cite(ex: Example, doc: int, title: str = "") -> str:
    """Full citation, as the student's prompt lists documents."""
    if doc:
        return f"Document [{doc}] (Title: {ex.documents[doc - 1][0]})"
    return f"the document on {title}" if title else "the documents"


def cite_short(doc: int, title: str) -> str:
    """Short citation, "Document [i]", once the full one has been given."""
    return f"Document [{doc}]" if doc else f"the document on {title}"


def quote(text: str, words: int, focus: str = "") -> str:
    """At most `words` words of the evidence, as a quote; the sentence naming `focus` (the step's
    finding) is preferred, and a cut keeps the words around it so the quote still shows it."""
    sentences = split_sentences(text) or [text]
    named = [s for s in sentences if mentions(s, focus)]
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


def number(n: int) -> str:
    """Small counts in words, as running text writes them."""
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)
