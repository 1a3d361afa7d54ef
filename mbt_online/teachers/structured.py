"""`StructuredTeacher`: a rule-based stand-in for an LLM teacher, for CPU runs and tests.

It writes five-phase monologues grounded in the gold annotations of any `Example` (see `chain`),
in one of three styles: "full" paragraphs (`writers`, with an MBT-S `pitfalls` paragraph or the
MBT-R correction of the draft read by `drafts`), "concise" one line per phase, or "student", the
world student's own lines. Every trace passes the shared `verify` gate before it is returned.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from mbt_online.scoring.text import count_words, mentions, normalize_answer, split_sentences
from mbt_online.tasks.base import Example
from mbt_online.tasks.world import (
    answer_line,
    clean_lines,
    hop_lines,
    hop_path,
    is_world_question,
    twin_slip,
)
from mbt_online.teachers.chain import Step, gold_steps, is_yes_no, lookalikes
from mbt_online.teachers.contract import MODES, UNSTRUCTURED, TeachRequest, TeachResult, verify
from mbt_online.teachers.drafts import (
    Slip,
    correction,
    dedupe,
    draft_facts,
    draft_slip,
    find_slip,
    slip_step,
    split_draft,
)
from mbt_online.teachers.phrases import LOOP, TERSE, cite, pick, quote
from mbt_online.teachers.pitfalls import pick_pitfall
from mbt_online.teachers.writers import assemble, planning, understanding

STYLES = ("full", "concise", "student")
_CLIP_WORDS = 30  # concise style: longest evidence quote, in words


def _concise(ex: Example, steps: list[Step], rng: random.Random, slip: Slip | None) -> str:
    """The five phases in one short line each, quoting the evidence: for students that copy well
    but must learn to stop, where a long monologue would teach length instead of regulation.
    Quotes are clipped just after the step's finding: a small student copying a 150-word infobox
    drifts or hits the length cap, and the answer it must extract should sit at the end of what
    it just copied. MBT-R names the draft's slip when it is a name, not a garbled sentence."""
    lines = [f"We need to find: {ex.question}", f"Plan: {len(steps) or 'a few'} hops."]
    last = len(steps) - 1
    lines += [_clip(s.evidence, ex.answer if k == last else s.answer) for k, s in enumerate(steps)]
    # a yes/no answer counts only as a statement ("the answer is no"): "no" is in every trace
    says = "So the answer is" if is_yes_no(ex) else "This gives"
    lines[-1] += f" {says} {ex.answer}."
    if slip is not None and _nameable(slip.text, ex):
        lines.append(f"Wait, not {slip.text}: the chain does not lead there.")
    else:
        others = lookalikes(ex, steps)
        title = ex.documents[rng.choice(others) - 1][0] if others else "another document"
        lines.append(f"Wait, {title} is not on the chain.")
    lines.append(f"Check: {ex.answer} fits.")
    return "\n".join(lines)


def _clip(evidence: str, focus: str, words: int = _CLIP_WORDS) -> str:
    """The evidence sentence naming `focus` (the first sentence without one), cut after the
    focus when longer than `words`; the words around it when the focus comes late."""
    sentences = split_sentences(evidence) or [evidence]
    sentence = next((s for s in sentences if focus and mentions(s, focus)), sentences[0])
    parts = sentence.split()
    if len(parts) <= words:
        return sentence
    end = _end_of(parts, focus) if focus else words
    if end is None or end > words:
        return quote(sentence, words, focus)
    return " ".join(parts[: max(end, words // 2)]) + " ..."


def _end_of(parts: list[str], phrase: str) -> int | None:
    """The number of words up to and including the first occurrence of `phrase` in `parts`,
    matched word by word after normalisation (articles and punctuation drop out on both sides)."""
    target = normalize_answer(phrase).split()
    kept = [(i, normalize_answer(w)) for i, w in enumerate(parts)]
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
    own_words = normalize_answer(text) in normalize_answer(ex.question)
    short = 0 < len(text.split()) <= 6 and not own_words
    return short and not re.search(r"(?i)\banswer\b", text)


def _in_student_words(ex: Example, slip: Slip | None, draft: str | None = None) -> str:
    """MBT-R for a student with a fixed line style (the world student): its own clean lines (goal
    and plan, one line per hop, the answer) and then one check that names a wrong final answer
    as the mistake, or finds none, and stops. SFT thus moves the decision after the first answer
    instead of teaching new wording the student would have to learn to read with.

    Where the question has a look-alike chain (`world.twin_hops`) the check re-reads the hop the
    look-alike threatens (its document's sentence, with the full name), and a draft that slipped
    there keeps its slip line, followed at once by the self-correction that names the look-alike
    and the right line: the monitoring and repair the student's own samples rarely show."""
    wrong = f"{slip.text} was wrong" if slip is not None else "no mistake"
    goal, *steps, said = clean_lines(ex)
    twin = twin_slip(ex)
    if twin is None:
        return "\n".join([goal, *steps, said, f"Check: {wrong}, {ex.answer} fits."])
    k = twin.hop
    if draft and twin.wrong[0] in draft:
        steps = [*steps[:k], f"{hop_path(ex, k)}: {twin.wrong[0]}", twin.repair_line(), *steps[k:]]
        wrong = f"{twin.twin} was wrong"
    check = f"Check: {ex.hops[k].evidence} So {wrong}, {ex.answer} fits."
    return "\n".join([goal, *steps, said, check])


def plain_solution(ex: Example, rewrite: bool = False) -> str:
    """The teacher's own derivation with none of the five phases' lines: for the world student its
    clean lines (teacher distillation; goal line included: it is how a solver states the path) or,
    as Distill-R's rewrite, only the hop lines and the answer (MBT-R's verified content without
    its phase lines); elsewhere each hop's evidence, clipped at its finding, and the answer."""
    if is_world_question(ex):
        return "\n".join(clean_lines(ex) if not rewrite else [*hop_lines(ex), answer_line(ex)])
    steps = gold_steps(ex)
    last = len(steps) - 1
    lines = [_clip(s.evidence, ex.answer if k == last else s.answer) for k, s in enumerate(steps)]
    says = "So the answer is" if is_yes_no(ex) else "This gives"
    return "\n".join([*lines, f"{says} {ex.answer}."]) if lines else f"{says} {ex.answer}."


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
        steps = gold_steps(ex)
        head = [understanding(ex, steps, rng, terse), planning(ex, steps, rng)]
        after, pitfall = pick_pitfall(ex, steps, rng)
        return assemble(ex, steps, rng, terse, head, after, pitfall, {})

    def rewrite(self, ex: Example, draft: str, rng: random.Random, terse: int = 0) -> str:
        """MBT-R: keep the draft's supported findings, drop its loops and restatements, turn its
        error (if any) into an explicit self-correction at a document, end with verification."""
        steps = gold_steps(ex)
        body, final = split_draft(draft)
        sentences, dropped = dedupe(split_sentences(body))
        slip = find_slip(ex, steps, sentences, final)
        facts = draft_facts(ex, steps, sentences, slip)
        head = [understanding(ex, steps, rng, terse), planning(ex, steps, rng)]
        after, pitfall = pick_pitfall(ex, steps, rng)
        if slip and steps:
            after, pitfall = slip_step(steps, slip), correction(ex, steps, slip, rng, terse)
        elif dropped >= 2 and facts:
            k = max(facts)
            ref = cite(ex, steps[k].doc, steps[k].title)
            after, pitfall = k, pick(rng, LOOP, ref=ref)
        return assemble(ex, steps, rng, terse, head, after, pitfall, facts)

    def concise(self, ex: Example, draft: str | None, rng: random.Random) -> str:
        """Concise style: MBT-S when `draft` is None, else MBT-R correcting the draft's slip."""
        steps = gold_steps(ex)
        return _concise(ex, steps, rng, draft_slip(ex, steps, draft))

    def student_words(self, ex: Example, draft: str | None) -> str:
        """Student style: the world student's own lines (MBT-S: no slip to name); examples it
        cannot write (real data) fall back to the concise style."""
        if not is_world_question(ex):
            return self.concise(ex, draft, random.Random(f"{self.seed}|{ex.id}"))
        slip = draft_slip(ex, gold_steps(ex), draft)
        # only a wrong final answer is named: a detour through a distractor is simply cut
        return _in_student_words(ex, slip if slip and slip.kind == "answer" else None, draft)

    def teach(self, requests: list[TeachRequest]) -> list[TeachResult]:
        """Write and verify one trace per request; retry a rejected one with a fresh draw (and
        a terser one after an over-budget rejection) up to `max_tries`."""
        return [self._teach_one(r) for r in requests]

    def _write(self, req: TeachRequest, rng: random.Random, terse: int) -> str:
        mode, draft = req.mode, req.draft
        if mode in UNSTRUCTURED:
            return plain_solution(req.example, rewrite=mode == "distill-r")
        if mode == "direct-r":  # MBT-R of the teacher's own solution instead of a student draft
            mode, draft = "mbt-r", plain_solution(req.example)
        if self.style == "student" and mode in ("mbt-s", "mbt-r"):
            return self.student_words(req.example, draft if mode == "mbt-r" else None)
        if self.style == "concise" and mode in ("mbt-s", "mbt-r"):
            return self.concise(req.example, draft if mode == "mbt-r" else None, rng)
        if mode == "mbt-s":
            return self.synthesize(req.example, rng, terse)
        if mode == "mbt-r":
            return self.rewrite(req.example, draft or "", rng, terse)
        raise ValueError(f"unknown teacher mode {req.mode!r}; expected one of {', '.join(MODES)}")

    def _teach_one(self, req: TeachRequest) -> TeachResult:
        ex, terse = req.example, 0
        trace, reasons = None, ["empty"]
        for attempt in range(self.max_tries):
            rng = random.Random(f"{self.seed}|{ex.id}|{req.mode}|{attempt}")
            trace = self._write(req, rng, terse)
            verdict = verify(
                trace, ex, self.budget_tokens, self.count_tokens, req.mode not in UNSTRUCTURED
            )
            if verdict.ok:
                return self._result(req, trace, True, [], attempt + 1)
            reasons = verdict.reasons
            if "over_budget" in reasons:
                terse = min(terse + 1, len(TERSE) - 1)
        return self._result(req, trace, False, reasons, self.max_tries)

    def _result(
        self, req: TeachRequest, trace: str | None, ok: bool, reasons: list[str], tries: int
    ) -> TeachResult:
        usage = {"completion_tokens": self.count_tokens(trace) if trace else 0}
        return TeachResult(req.example.id, req.mode, trace, ok, reasons, tries, self.backend, usage)
