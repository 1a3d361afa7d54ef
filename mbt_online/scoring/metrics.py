"""Answer extraction, normalisation, EM / F1 / cover, trace diagnostics, AES, RRP and MQI.

Pure functions on strings: no model, no I/O. Rewards and evaluation are built from these, so the
training signal and the reported numbers can never disagree about what "correct" or "looping" means.
The RRP and MQI functions here are the cheap heuristic versions of the paper's LLM judges: they run
on every rollout of every round, where a judge call per trace would cost more than the training.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from mbt_online.scoring.stats import harmonic, mean
from mbt_online.scoring.text import (
    WORD,
    normalize_answer,
    normalize_loose,
    split_sentences,
    wordset,
)

# The five metacognitive phases of MBT, in the order a well-regulated trace shows them.
PHASES = ("understanding", "planning", "execution", "self_correction", "verification")

# Surface cues of each phase. The heuristic MQI and the teacher's `verify` both read phases through
# these, so the structured teacher must (and an LLM teacher naturally does) use such wording.
# fmt: off
PHASE_CUES: dict[str, tuple[str, ...]] = {
    "understanding": (
        "the question asks", "we need to find", "we are asked", "the goal is", "the task is",
        "what we need", "irrelevant", "distractor", "set aside", "not relevant", "can ignore",
        "we must determine", "asks for", "asks which", "asks who", "asks what",
        "the question is asking", "we need to determine", "we need to identify",
    ),
    "planning": (
        "plan", "first,", "first we", "step 1", "then we", "next we", "roadmap", "sub-question",
        "two steps", "three steps", "four steps", "hops", "strategy", "approach",
        "break this down", "break it down",
    ),
    "execution": (
        "document", "according to", "states that", "says that", "we find", "this gives",
        "so the", "which means", "tells us", "we learn", "shows that",
    ),
    "self_correction": (
        "wait", "but that", "mistake", "wrong", "actually", "correct this", "on closer", "re-read",
        "not quite", "instead", "that was", "i misread", "we misread", "inconsistent",
        "doesn't match", "does not match", "however", "on second thought",
    ),
    "verification": (
        "verify", "check", "double-check", "confirm", "consistent with", "matches", "verified",
        "sanity", "re-check", "satisfies", "make sure",
    ),
}
# fmt: on


def detect_phases(text: str) -> list[str]:
    """Phases whose cues appear in the text, in canonical order (heuristic MQI's phase list)."""
    low = text.lower()
    return [p for p in PHASES if any(cue in low for cue in PHASE_CUES[p])]


# --------------------------------------------------------------------------------------------------
# Answer and trace extraction

_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The text between the LAST `<answer>` and the `</answer>` after it; None if missing/unclosed.

    The last tag wins because models often quote the format ("put it in <answer>...</answer>") or
    draft an answer while thinking before the final one, as in the paper's release. An unclosed tag
    is usually a capped generation: treating it as no answer keeps a half-written string from
    counting as correct. Tags are matched case-insensitively since small models drift in casing.
    """
    opens = list(_ANSWER_OPEN.finditer(text))
    if not opens:
        return None
    start = opens[-1].end()
    close = _ANSWER_CLOSE.search(text, start)
    return text[start : close.start()].strip() if close else None


def split_trace(text: str) -> str:
    """The reasoning part of a response: what reach, redundancy and phases are measured on.

    Inside `<think>...</think>` when present (an unclosed `<think>` runs to the end: a capped trace
    is all reasoning). A lone `</think>` counts too, because chat templates that open the think
    block in the prompt leave only the closing tag in the completion. Otherwise the text before the
    last `<answer>`, else everything: a model that ignores the format still has reasoning to score.
    """
    opened = _THINK_OPEN.search(text)
    if opened:
        close = _THINK_CLOSE.search(text, opened.end())
        return text[opened.end() : close.start() if close else len(text)].strip()
    close = _THINK_CLOSE.search(text)
    if close:
        return text[: close.start()].strip()
    opens = list(_ANSWER_OPEN.finditer(text))
    return (text[: opens[-1].start()] if opens else text).strip()


# --------------------------------------------------------------------------------------------------
# Answer scores, as each benchmark's official evaluation script computes them

# Which official rule scores a benchmark's EM / F1. "hotpotqa": `hotpot_evaluate_v1.py`, whose F1 is
# 0 when either side normalises to yes / no / noanswer and they differ, and 0 when either side is
# empty; 2WikiMultihopQA's `2wikimultihop_evaluate_v1.1.py` copies it (max over the answer and its
# id_aliases). "squad": SQuAD v2.0's `compute_f1` (empty vs empty is 1), which MuSiQue's
# `evaluate_v1.0` answer metric uses, max over the answer and its aliases. The synthetic world
# task is scored as HotpotQA, the benchmark its bridge questions imitate. Unknown or empty
# sources (rows and tests without a benchmark) get plain SQuAD, the rule the others extend.
OFFICIAL_RULES: dict[str, str] = {
    "hotpotqa": "hotpotqa",
    "2wikimultihopqa": "hotpotqa",
    "world": "hotpotqa",
    "musique": "squad",
}
# Answers that HotpotQA's script never gives partial F1 to (its comparison questions' yes / no).
_YES_NO = ("yes", "no", "noanswer")


def official_rule(benchmark: str) -> str:
    """The EM / F1 rule of a benchmark (`Example.source`): "hotpotqa" or "squad"."""
    return OFFICIAL_RULES.get(benchmark, "squad")


def exact_match(pred: str | None, golds: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold (answer or alias); a missing
    answer is wrong, as in the paper. All three official scripts agree on EM."""
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in golds))


def _overlap_f1(p: list[str], g: list[str]) -> float:
    """Bag-of-tokens F1, written as the official scripts write it so floats agree bit for bit."""
    num_same = sum((Counter(p) & Counter(g)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(p)
    recall = 1.0 * num_same / len(g)
    return (2 * precision * recall) / (precision + recall)


def _f1_squad(pred: str, gold: str) -> float:
    """SQuAD v2.0 / MuSiQue `compute_f1`: an empty side scores 1 only against another empty."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    return _overlap_f1(p, g)


def _f1_hotpot(pred: str, gold: str) -> float:
    """HotpotQA / 2Wiki `f1_score`: yes / no / noanswer score all or nothing; empty scores 0."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    if p != g and (p in _YES_NO or g in _YES_NO):
        return 0.0
    return _overlap_f1(p.split(), g.split())


def f1_score(pred: str | None, golds: list[str], benchmark: str = "") -> float:
    """Token F1 under the benchmark's official rule (`official_rule`), best over the gold answer
    and its aliases; a missing answer scores 0, as a missing prediction does in every script."""
    if pred is None:
        return 0.0
    pair = _f1_hotpot if official_rule(benchmark) == "hotpotqa" else _f1_squad
    return max((pair(pred, g) for g in golds), default=0.0)


def cover_substring(pred: str | None, golds: list[str]) -> float:
    """The paper's cover: 1.0 if any normalised gold is a substring of the normalised prediction.

    Reported beside `cover_match` (`eval/cover_substring`) only so numbers can be set beside the
    paper's; it counts "no" inside "Knowles", so neither the reward nor `eval/accuracy` uses it.
    Golds that normalise to nothing are skipped, as in `cover_match`: "" is in every string.
    """
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(any(g and g in p for g in map(normalize_answer, golds)))


def cover_match(pred: str | None, golds: list[str]) -> float:
    """1.0 if any normalised gold appears in the normalised prediction as whole words (cover).

    The paper's cover is a plain substring; on a small student's short, often wrong answers that
    counts spurious hits: gold "no" inside "Knowles" or "Freakonomics", "19" inside "1990". Three of
    SmolLM2's 16 held-out hits at one round were such, and `correct` is also the training reward.
    Whole words keep every genuine containment ("It was Frank Herbert" covers "Herbert"), so the
    score can only be lower than the paper's, never flattered. Words are read as the trace's
    reach is (`contains_answer`): punctuation splits them, so "Stephen King's" covers "Stephen
    King". Golds that normalise to nothing ("The") are skipped: they would be found everywhere.
    """
    if pred is None:
        return 0.0
    padded = f" {normalize_loose(pred)} "
    return float(any(g and f" {g} " in padded for g in map(normalize_loose, golds)))


# --------------------------------------------------------------------------------------------------
# Repetition


def repetition_ratio(text: str, n: int = 4) -> float:
    """Fraction of word n-grams that repeat an earlier n-gram (0 = none, near 1 = a loop).

    Degeneration is a loop of the same phrases; n=4 is long enough that ordinary phrasing ("the
    answer is the") rarely repeats by chance, short enough to catch loops of short sentences.
    """
    words = WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


# --------------------------------------------------------------------------------------------------
# Answer reach in the trace

# Golds so common as words that their mere presence says nothing about having derived them.
_TRIVIAL_GOLDS = frozenset({"yes", "no"})


def contains_answer(text: str, golds: list[str]) -> bool:
    """Whether a gold answer appears in the text as whole words (after loose normalisation).

    Word boundaries matter on long traces: "1" or "Ra" would otherwise be found inside any year or
    word. Yes/no golds count only when stated as an answer ("the answer is yes"): "no" occurs in
    almost every trace, and counting it would turn every wrong yes/no answer into an
    answer-inclusive error.
    """
    padded = f" {normalize_loose(text)} "
    for gold in map(normalize_loose, golds):
        if not gold:
            continue
        if gold in _TRIVIAL_GOLDS:
            if re.search(rf" answer (?:is|would be|should be|must be) {gold} ", padded):
                return True
        elif f" {gold} " in padded:
            return True
    return False


def _first_reach_in(sentences: list[str], golds: list[str]) -> int | None:
    """Index of the first sentence that contains a gold, or whose pair with the previous sentence
    does (an answer split by a mistaken boundary, e.g. "St. Louis" or "U.S. Army", counts where it
    ends)."""
    for i, sent in enumerate(sentences):
        window = sent if i == 0 else f"{sentences[i - 1]} {sent}"
        if contains_answer(window, golds):
            return i
    return None


def first_reach(text: str, golds: list[str]) -> int | None:
    """Index of the first sentence of the trace that contains a gold answer (None if never)."""
    return _first_reach_in(split_sentences(text), golds)


# --------------------------------------------------------------------------------------------------
# RRP (reach-redundancy profile), heuristic version

_STOPWORDS = wordset(
    """a an the and or but if so of to in on at by for with from as is are was were be been being
    it its this that these those there here then than which who whom whose what when where why how
    i me my we us our you your he him his she her they them their not do does did done have has had
    can could would should will shall may might must also just only very into about over after
    before up down out all any some such both each other same s t m d ll re ve one"""
)
# Vocabulary of hesitation: a sentence made only of these (and stopwords) adds nothing.
_FILLER_WORDS = wordset(
    """hmm hm um uh okay ok well wait maybe perhaps let think again sure really actually right
    alright yes no yeah hold second thought reconsider double check recheck see look mean guess
    anyway still though hmmm confirm correct sounds seems"""
)
_VERIFY_ANCHORS = ("document", "doc ", "passage", "according to", "paragraph")
# How many concrete audits after the answer count as verification rather than circling.
_MAX_VERIFICATIONS = 2
# Share of a sentence's content words already said above it that makes it a restatement.
_SEEN_THRESHOLD = 0.6


@dataclass
class RRP:
    """Reach rho (0..1, lower = earlier), redundancy delta (0..1) and their combined score."""

    reach: float
    redundancy: float
    score: float
    reached: bool


def _content_words(sentence: str) -> list[str]:
    words = WORD.findall(sentence.lower())
    return [w for w in words if w not in _STOPWORDS and w not in _FILLER_WORDS]


def _is_verification(sentence: str) -> bool:
    """A concrete audit (a verification cue plus a document it checks against): the paper's judge
    keeps such VERIFICATION apart from REDUNDANT, while "let me double-check" alone is doubt."""
    low = sentence.lower()
    return any(c in low for c in PHASE_CUES["verification"]) and any(
        a in low for a in _VERIFY_ANCHORS
    )


def _is_redundant(sentence: str, seen_words: set[str], seen_sentences: set[str]) -> bool:
    """Repeats an earlier sentence (looping); is pure doubt or hesitation filler ("Wait, let me
    think again.", "Hmm, I'm not sure." have no content words once hesitation vocabulary is set
    aside); or restates: at least 60% of its content words were already said. A new fact or a
    named alternative brings new names, numbers or relations, so it stays well under 60%."""
    if normalize_loose(sentence) in seen_sentences:
        return True
    words = _content_words(sentence)
    if not words:
        return True
    return sum(w in seen_words for w in words) / len(words) >= _SEEN_THRESHOLD


def rrp_heuristic(trace: str, golds: list[str]) -> RRP:
    """Reach-redundancy profile on sentences, a judge-free stand-in for the paper's RRP.

    Reach rho = (first-reach sentence index + 1) / sentences, 1.0 when the gold is never reached.
    Redundancy delta = redundant sentences after the first reach / sentences: before the answer is
    reached, revisiting is exploration that rho already prices; after it, restatement, repeated
    sentences and vague doubt are exactly the overthinking MBT removes. Up to two concrete audits
    against a document are kept as verification. Score = harmonic mean of (1 - rho) and
    (1 - delta), so a trace must both arrive early and stop to score well.
    """
    sentences = split_sentences(trace)
    reach_idx = _first_reach_in(sentences, golds)
    if not sentences or reach_idx is None:
        return RRP(reach=1.0, redundancy=0.0, score=0.0, reached=False)
    seen_words: set[str] = set()
    seen_sentences: set[str] = set()
    redundant = verifications = 0
    for i, sent in enumerate(sentences):
        if i > reach_idx:
            repeat = normalize_loose(sent) in seen_sentences
            if not repeat and verifications < _MAX_VERIFICATIONS and _is_verification(sent):
                verifications += 1
            elif _is_redundant(sent, seen_words, seen_sentences):
                redundant += 1
        seen_words.update(_content_words(sent))
        seen_sentences.add(normalize_loose(sent))
    rho = (reach_idx + 1) / len(sentences)
    delta = redundant / len(sentences)
    return RRP(reach=rho, redundancy=delta, score=harmonic(1 - rho, 1 - delta), reached=True)


# --------------------------------------------------------------------------------------------------
# MQI and AES


def mqi_level(phases: list[str]) -> int:
    """Phase-presence level 0..5 on the paper's MQI scale.

    0 no phase (a direct answer); 1 a bare chain (execution, or any single phase without a plan or
    a check); 2 planning or verification present, or three phases without plan + execution
    (more structure than a chain, less than a monitored plan); 3 planning + execution (plan and
    monitored steps); 4 any four phases; 5 all five.
    """
    present = set(phases) & set(PHASES)
    n = len(present)
    if n >= 4:
        return n
    if {"planning", "execution"} <= present:
        return 3
    if present & {"planning", "verification"} or n >= 3:
        return 2
    return 1 if n else 0


def mqi(level: float, base_mean_tokens: float, mean_tokens: float) -> float:
    """Length-aware MQI = level * (base mean tokens / mean tokens): structure bought with extra
    length is discounted. 0.0 when the method produced no tokens (no trace, no structure)."""
    if mean_tokens <= 0:
        return 0.0
    return level * base_mean_tokens / mean_tokens


def aes(
    acc: float,
    tokens: float,
    base_acc: float,
    base_tokens: float,
    a: float = 1.0,
    b: float = 3.0,
    c: float = 5.0,
) -> float:
    """Accuracy-efficiency score relative to the base model (O1-Pruner constants by default).

    dL = (L_base - L) / L_base, dA = (A - A_base) / A_base; AES = a*dL + b*|dA| if dA >= 0 else
    a*dL - c*|dA|, so losing accuracy costs more than gaining it earns. Guards: when the base scored
    0, the relative change is undefined (infinite for any gain), so dA falls back to the absolute
    change acc - base_acc, which keeps the sign and stays within [-1, 1]; when the base produced
    no tokens there is no length reference and the length term is 0.
    """
    d_len = (base_tokens - tokens) / base_tokens if base_tokens > 0 else 0.0
    d_acc = (acc - base_acc) / base_acc if base_acc != 0 else acc - base_acc
    return a * d_len + (b * abs(d_acc) if d_acc >= 0 else -c * abs(d_acc))


# --------------------------------------------------------------------------------------------------
# Per-trace diagnostics and aggregation


@dataclass
class TraceDiagnostics:
    """What the rewards, the teacher's trace selection and the eval tables read about a trace."""

    answer: str | None
    correct: float  # cover match of the extracted answer
    em: float  # normalised equality: the same in every official script
    f1: float  # under the benchmark's official rule (`official_rule`)
    has_answer_tag: bool
    truncated: bool  # stopped by the token cap: the degeneration count
    repetition: float
    reached: bool  # a gold answer appears in the reasoning
    answer_inclusive_error: bool  # reached, yet the final answer is wrong
    first_reach: float | None  # relative position of the first-reach sentence (RRP's rho)
    redundancy: float
    rrp: float
    phases: list[str] = field(default_factory=list)
    tokens: int = 0
    budget: int = 0
    over_budget: float = 0.0  # max(0, tokens / budget - 1)
    cover_substring: float = 0.0  # the paper's substring cover; 0 in rows scored before it existed


def diagnose(
    text: str,
    finish_reason: str,
    n_tokens: int,
    golds: list[str],
    budget: int,
    ngram: int = 4,
    benchmark: str = "",
) -> TraceDiagnostics:
    """Score one generated response against its gold answers.

    Reach, redundancy and phases are read from the reasoning part only (`split_trace`): the final
    answer repeating the gold must not count as the trace having derived it. Repetition is read on
    the whole response, since a loop can run past the reasoning. EM / F1 follow the official
    script of `benchmark` (the example's source), so they sit beside published numbers.
    """
    answer = extract_answer(text)
    correct = cover_match(answer, golds)
    trace = split_trace(text)
    profile = rrp_heuristic(trace, golds)
    reached = contains_answer(trace, golds)
    return TraceDiagnostics(
        answer=answer,
        correct=correct,
        em=exact_match(answer, golds),
        f1=f1_score(answer, golds, benchmark),
        has_answer_tag=answer is not None,
        truncated=finish_reason == "length",
        repetition=repetition_ratio(text, ngram),
        reached=reached,
        answer_inclusive_error=reached and correct == 0.0,
        first_reach=profile.reach if profile.reached else None,
        redundancy=profile.redundancy,
        rrp=profile.score,
        phases=detect_phases(trace),
        tokens=n_tokens,
        budget=budget,
        over_budget=max(0.0, n_tokens / budget - 1) if budget > 0 else 0.0,
        cover_substring=cover_substring(answer, golds),
    )


def aggregate(diags: list[TraceDiagnostics], tiers: list[str] | None = None) -> dict[str, float]:
    """Mean metrics over traces, plus per-tier accuracy and length when tiers are given.

    An empty list gives zeros (with n = 0) rather than NaN so logging never breaks. first_reach is
    the mean over traces that reach the answer (1.0 when none do, RRP's "never" value).
    answer_inclusive_rate is over all traces (what a round log tracks), answer_inclusive_share over
    wrong ones (the paper's "half of all errors" statistic). tokens_per_correct is the mean length
    of correct traces (0 when none is correct): mean_tokens alone rewards a student that answers
    wrong quickly. Traces with an empty tier name count only in the overall numbers.
    """
    if tiers is not None and len(tiers) != len(diags):
        raise ValueError(f"got {len(tiers)} tiers for {len(diags)} traces")
    wrong = [d for d in diags if d.correct == 0.0]
    reaches = [d.first_reach for d in diags if d.first_reach is not None]
    right = [float(d.tokens) for d in diags if d.correct > 0]
    out = {
        "n": float(len(diags)),
        "accuracy": mean([d.correct for d in diags], empty=0.0),
        "cover_substring": mean([d.cover_substring for d in diags], empty=0.0),
        "em": mean([d.em for d in diags], empty=0.0),
        "f1": mean([d.f1 for d in diags], empty=0.0),
        "mean_tokens": mean([float(d.tokens) for d in diags], empty=0.0),
        "tokens_per_correct": mean(right, empty=0.0),
        "degeneration_rate": mean([float(d.truncated) for d in diags], empty=0.0),
        "answer_inclusive_rate": mean([float(d.answer_inclusive_error) for d in diags], empty=0.0),
        "answer_inclusive_share": mean([float(d.answer_inclusive_error) for d in wrong], empty=0.0),
        "format_rate": mean([float(d.has_answer_tag) for d in diags], empty=0.0),
        "repetition": mean([d.repetition for d in diags], empty=0.0),
        "redundancy": mean([d.redundancy for d in diags], empty=0.0),
        "rrp": mean([d.rrp for d in diags], empty=0.0),
        "first_reach": mean(reaches, empty=1.0),
        "mqi_level": mean([float(mqi_level(d.phases)) for d in diags], empty=0.0),
    }
    out.update(by_group(diags, tiers or [], ("accuracy", "mean_tokens")))
    return out


def by_group(
    diags: list[TraceDiagnostics], labels: list[str], keys: tuple[str, ...]
) -> dict[str, float]:
    """`<label>/<key>` for each non-empty label (a tier, a benchmark): `aggregate`'s `keys` over
    the traces carrying that label."""
    out: dict[str, float] = {}
    for label in sorted({x for x in labels if x}):
        agg = aggregate([d for d, x in zip(diags, labels, strict=True) if x == label])
        out.update({f"{label}/{k}": agg[k] for k in keys})
    return out
