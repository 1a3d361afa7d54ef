"""LLM judges: correctness grade, answer-hit, RRP and MQI, and their aggregation per round.

Each judge is one chat request whose prompt (prompts.py) fixes a machine-readable reply; the
parsers here still accept the messy replies real models give (markdown bold, code fences, a JSON
object inside prose, "self-correction" for "self_correction", a verdict followed by chatter). A
reply that cannot be read is recorded as `unparsable` with its raw text, and a request that failed
for good as `error`: neither crashes a run nor silently counts as a verdict.

Cheap cases are decided without a call, by the judges' own definitions: an empty prediction is
NOT_ATTEMPTED, and an empty trace reaches nothing (RRP 0) and has no phases (MQI level 0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mbt_online.contracts import check_failures
from mbt_online.llm.client import LLMClient, make_client
from mbt_online.llm.wire import ChatFailure, ChatRequest, ChatResult
from mbt_online.prompts import (
    JUDGE_GRADES,
    RRP_LABELS,
    judge_answer_hit_messages,
    judge_correctness_messages,
    judge_mqi_messages,
    judge_rrp_messages,
)
from mbt_online.rundir.metrics_file import read_metrics, write_round_metrics
from mbt_online.rundir.stages import load_rows, save_rows, stage_dir
from mbt_online.scoring.metrics import PHASES, mqi
from mbt_online.scoring.stats import harmonic, mean
from mbt_online.scoring.text import split_paragraphs, split_sentences

JUDGES = ("correctness", "answer_hit", "rrp", "mqi")
JUDGE_MAX_TOKENS = 1024


@dataclass
class CorrectnessVerdict:
    grade: str | None  # one of JUDGE_GRADES; None when unparsable or failed
    unparsable: bool = False
    error: str = ""
    raw: str = ""


@dataclass
class AnswerHitVerdict:
    hit: bool | None
    unparsable: bool = False
    error: str = ""
    raw: str = ""


@dataclass
class RRPVerdict:
    """The judge's marks and the numbers derived from them (MBT_SPEC.md, RRP)."""

    answer_paragraph: int | None  # 1-based; 0 = no paragraph reaches the answer
    labels: list[str] = field(default_factory=list)
    reach: float | None = None
    redundancy: float | None = None
    score: float | None = None
    unparsable: bool = False
    error: str = ""
    raw: str = ""


@dataclass
class MQIVerdict:
    level: int | None
    phases: list[str] = field(default_factory=list)
    unparsable: bool = False
    error: str = ""
    raw: str = ""


Verdict = CorrectnessVerdict | AnswerHitVerdict | RRPVerdict | MQIVerdict


# --------------------------------------------------------------------------------------------------
# Parsers: text in, verdict out, never an exception. Replies are cached, so a reply that crashed a
# parser would crash every resume: every regex here is linear (possessive quantifiers where
# whitespace runs meet), digit runs are read only when short, and the JSON scan is bounded.

# Only this many trailing characters are searched for JSON objects. A judge reply is at most the
# teacher's token cap (a few thousand characters) and its verdict comes last; the bound keeps a
# hostile reply's scan short, since the decoder retries at every brace and each retry on deeply
# nested text walks up to the recursion limit before it fails.
JSON_SCAN_CHARS = 20_000
_MAX_DIGITS = 9  # longer digit runs are no paragraph or level, and `int` refuses 4,300+ digits


def _reply_text(text: Any) -> str:
    """The reply as text whatever a backend or cache handed over: bytes are decoded leniently,
    None and any other non-text value read as an empty (so unparsable) reply."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes | bytearray):
        return bytes(text).decode("utf-8", errors="replace")
    return ""


def _small_int(digits: str) -> int | None:
    """A run of digits as an int, or None when it is too long to be a count or a level."""
    return int(digits) if len(digits.lstrip("-")) <= _MAX_DIGITS else None


_GRADE_LINE = re.compile(r"GRADE\W{0,4}(NOT[\s_-]*ATTEMPTED|INCORRECT|CORRECT)\b", re.IGNORECASE)
_GRADE_WORD = re.compile(r"\b(NOT[\s_-]ATTEMPTED|INCORRECT|CORRECT)\b")  # upper case only
_LETTER = {"A": "CORRECT", "B": "INCORRECT", "C": "NOT_ATTEMPTED"}


def _canon_grade(word: str) -> str:
    w = re.sub(r"[\s_-]+", "_", word.upper())
    return "NOT_ATTEMPTED" if w.startswith("NOT") else w


def _last_line(text: str) -> str:
    lines = [ln.strip(" \t*`_#>.") for ln in text.strip().splitlines() if ln.strip(" \t*`_#>.")]
    return lines[-1] if lines else ""


def parse_correctness(text: str) -> CorrectnessVerdict:
    """The last "GRADE: X"; else an upper-case grade word or a SimpleQA letter on the last line.
    Lower-case prose ("this is not correct") is never read as a grade."""
    text = _reply_text(text)
    marked = _GRADE_LINE.findall(text)
    if marked:
        return CorrectnessVerdict(_canon_grade(marked[-1]), raw=text)
    last = _last_line(text)
    words = {_canon_grade(w) for w in _GRADE_WORD.findall(last)}
    if len(words) == 1:
        return CorrectnessVerdict(words.pop(), raw=text)
    if last.upper() in _LETTER and len(last) == 1:
        return CorrectnessVerdict(_LETTER[last.upper()], raw=text)
    return CorrectnessVerdict(None, unparsable=True, raw=text)


_HIT_LINE = re.compile(r"HIT\W{0,4}(YES|NO)\b", re.IGNORECASE)


def parse_answer_hit(text: str) -> AnswerHitVerdict:
    """The last "HIT: YES|NO"; else a bare yes/no as the last line."""
    text = _reply_text(text)
    marked = _HIT_LINE.findall(text)
    if marked:
        return AnswerHitVerdict(marked[-1].upper() == "YES", raw=text)
    last = _last_line(text).lower()
    if last in ("yes", "no"):
        return AnswerHitVerdict(last == "yes", raw=text)
    return AnswerHitVerdict(None, unparsable=True, raw=text)


def _json_objects(text: str) -> list[dict]:
    """Every JSON object embedded in the last `JSON_SCAN_CHARS` of the text (inside prose or code
    fences), in order. Text that is no JSON, nested past the recursion limit or holds a number
    past `int`'s digit limit is skipped like prose."""
    text = text[-JSON_SCAN_CHARS:]
    decoder, out, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            i += 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        i = end
    return out


def _as_int(value: Any) -> int | None:
    """3, 3.0, "3", "P3", "[P3]" -> 3; anything else, and any number of more than `_MAX_DIGITS`
    digits (it would not fit the verdict table's integer column), None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # NaN and infinities are not
        value = int(value)
    if isinstance(value, int):
        return value if abs(value) < 10**_MAX_DIGITS else None
    if isinstance(value, str):
        m = _INT_TEXT.fullmatch(value.strip())
        return _small_int(m.group(1)) if m else None
    return None


# possessive: a long run of spaces must not be split every way between the `\s*`s
_INT_TEXT = re.compile(r"\[?\s*+P?\s*+(-?\d++)\s*+\]?", re.IGNORECASE)


def _rrp_labels(raw: Any, n: int) -> list[str] | None:
    if isinstance(raw, dict):  # {"P1": "PROGRESS", ...}
        keyed = {_as_int(k): v for k, v in raw.items()}
        raw = [keyed.get(i) for i in range(1, n + 1)]
    if not isinstance(raw, list) or len(raw) != n:
        return None
    labels = [str(x).strip().upper() for x in raw]
    return labels if all(lb in RRP_LABELS for lb in labels) else None


_RRP_ANSWER = re.compile(r"answer[_ ]paragraph\W{0,4}P?(\d++)", re.IGNORECASE)
_RRP_LINE = re.compile(
    r"\[?P(\d++)\]?\s*+[:=\-]?\s*+\**+(PROGRESS|VERIFICATION|REDUNDANT)", re.IGNORECASE
)


def _rrp_fields(text: str, n: int) -> tuple[int | None, list[str] | None]:
    """(answer_paragraph, labels) from the last JSON object that has them, else from lines."""
    for obj in reversed(_json_objects(text)):
        if "answer_paragraph" in obj or "labels" in obj:
            return _as_int(obj.get("answer_paragraph")), _rrp_labels(obj.get("labels"), n)
    m = _RRP_ANSWER.findall(text)
    lines = {_small_int(k): v for k, v in _RRP_LINE.findall(text)}
    labels = _rrp_labels([lines.get(i) for i in range(1, n + 1)], n) if lines else None
    return (_small_int(m[-1]) if m else None), labels


def parse_rrp(text: str, paragraphs: list[str]) -> RRPVerdict:
    """Marks for `paragraphs`: both an answer paragraph in 0..n and exactly n valid labels, or
    unparsable (a label list of the wrong length means the judge misread the trace)."""
    text, n = _reply_text(text), len(paragraphs)
    answer, labels = _rrp_fields(text, n)
    if answer is None or not 0 <= answer <= n or labels is None:
        return RRPVerdict(answer, labels or [], unparsable=True, raw=text)
    reach, redundancy, score = rrp_from_marks(paragraphs, answer, labels)
    return RRPVerdict(answer, labels, reach, redundancy, score, raw=text)


def rrp_from_marks(
    paragraphs: list[str], answer_paragraph: int, labels: list[str]
) -> tuple[float, float, float]:
    """Reach rho = sentences up to the end of the answer paragraph / all sentences (1 if never);
    redundancy delta = sentences in REDUNDANT paragraphs / all; score = harmonic mean of 1 - rho
    and 1 - delta. A paragraph counts at least one sentence (a bare list item is still text)."""
    counts = [max(1, len(split_sentences(p))) for p in paragraphs]
    total = sum(counts)
    if not total:
        return 1.0, 0.0, 0.0
    reach = sum(counts[:answer_paragraph]) / total if answer_paragraph else 1.0
    redundancy = sum(c for c, lb in zip(counts, labels, strict=True) if lb == "REDUNDANT") / total
    return reach, redundancy, harmonic(1 - reach, 1 - redundancy)


_MQI_LEVEL = re.compile(r"level\W{0,4}([0-5])\b", re.IGNORECASE)


def _canon_phase(name: Any) -> str | None:
    key = re.sub(r"[\s-]+", "_", str(name).strip().lower())
    key = {
        "understanding_and_filtering": "understanding",
        "filtering": "understanding",
        "execution_and_monitoring": "execution",
        "monitoring": "execution",
        "correction": "self_correction",
    }.get(key, key)
    return key if key in PHASES else None


def parse_mqi(text: str) -> MQIVerdict:
    """{"level": 0..5, "phases": [...]} (last such object); else a "level: k" phrase. Phase names
    are normalised and unknown ones dropped; a level outside 0..5 is unparsable."""
    text = _reply_text(text)
    for obj in reversed(_json_objects(text)):
        if "level" not in obj:
            continue
        level = _as_int(obj.get("level"))
        raw_phases = obj.get("phases") if isinstance(obj.get("phases"), list) else []
        phases = [p for p in PHASES if p in {_canon_phase(x) for x in raw_phases}]
        if level is None or not 0 <= level <= 5:
            return MQIVerdict(None, phases, unparsable=True, raw=text)
        return MQIVerdict(level, phases, raw=text)
    m = _MQI_LEVEL.findall(text)
    if m:
        return MQIVerdict(int(m[-1]), raw=text)
    return MQIVerdict(None, unparsable=True, raw=text)


# --------------------------------------------------------------------------------------------------
# Single judges (one row, one request) and the batched path


def _request(messages: list[dict], max_tokens: int) -> ChatRequest:
    # Greedy and seeded: the same trace gets the same verdict, and a resumed run hits the cache.
    return ChatRequest(messages, n=1, temperature=0.0, max_tokens=max_tokens, seed=0)


@dataclass
class _Call:
    """A judge's request for one row, and how to read its reply (None: decided without a call)."""

    judge: str
    row: int
    request: ChatRequest | None
    local: Verdict | None = None
    paragraphs: list[str] = field(default_factory=list)


def _plan(judge: str, i: int, row: dict, max_tokens: int) -> _Call:
    q, gold = row.get("question", ""), row.get("answer", "")
    trace, predicted = (row.get("trace") or "").strip(), (row.get("predicted") or "").strip()
    if judge == "correctness":
        if not predicted:
            return _Call(judge, i, None, CorrectnessVerdict("NOT_ATTEMPTED"))
        return _Call(judge, i, _request(judge_correctness_messages(q, gold, predicted), max_tokens))
    if judge == "answer_hit":
        if not trace:
            return _Call(judge, i, None, AnswerHitVerdict(False))
        return _Call(judge, i, _request(judge_answer_hit_messages(q, gold, trace), max_tokens))
    if judge == "rrp":
        paragraphs = split_paragraphs(trace)
        if not paragraphs:
            return _Call(judge, i, None, RRPVerdict(0, [], 1.0, 0.0, 0.0))
        req = _request(judge_rrp_messages(q, gold, paragraphs), max_tokens)
        return _Call(judge, i, req, paragraphs=paragraphs)
    if judge == "mqi":
        if not trace:
            return _Call(judge, i, None, MQIVerdict(0, []))
        return _Call(judge, i, _request(judge_mqi_messages(q, trace), max_tokens))
    raise ValueError(f"unknown judge {judge!r}; expected one of {', '.join(JUDGES)}")


def _read(call: _Call, out: ChatResult | ChatFailure) -> Verdict:
    if isinstance(out, ChatFailure):
        return _failed(call.judge, f"{out.kind}: {out.error}")
    text = out.texts[0] if out.texts else ""
    if call.judge == "correctness":
        return parse_correctness(text)
    if call.judge == "answer_hit":
        return parse_answer_hit(text)
    if call.judge == "rrp":
        return parse_rrp(text, call.paragraphs)
    return parse_mqi(text)


def _failed(judge: str, error: str) -> Verdict:
    if judge == "correctness":
        return CorrectnessVerdict(None, unparsable=True, error=error)
    if judge == "answer_hit":
        return AnswerHitVerdict(None, unparsable=True, error=error)
    if judge == "rrp":
        return RRPVerdict(None, unparsable=True, error=error)
    return MQIVerdict(None, unparsable=True, error=error)


def _run_calls(client: Any, calls: list[_Call]) -> list[Verdict]:
    remote = [c for c in calls if c.request is not None]
    outs = iter(client.chat_many([c.request for c in remote]))
    return [c.local if c.request is None else _read(c, next(outs)) for c in calls]


def judge_one(
    client: LLMClient, judge: str, row: dict, max_tokens: int = JUDGE_MAX_TOKENS
) -> Verdict:
    """One judge on one row: `question` and `answer`, plus `predicted` (correctness) or `trace`
    (answer_hit, rrp, mqi)."""
    return _run_calls(client, [_plan(judge, 0, row, max_tokens)])[0]


def judge_rows(
    client: Any, rows: Sequence[dict], judges: Sequence[str], max_tokens: int = JUDGE_MAX_TOKENS
) -> list[dict[str, Verdict]]:
    """Every judge on every row, all requests in one bounded-concurrency batch."""
    calls = [_plan(j, i, row, max_tokens) for i, row in enumerate(rows) for j in judges]
    out: list[dict[str, Verdict]] = [{} for _ in rows]
    for call, verdict in zip(calls, _run_calls(client, calls), strict=True):
        out[call.row][call.judge] = verdict
    return out


# --------------------------------------------------------------------------------------------------
# Aggregation


def aggregate_verdicts(
    verdicts: list[dict[str, Verdict]],
    judges: Sequence[str],
    mean_tokens: float | None = None,
    base_mean_tokens: float | None = None,
) -> dict[str, float]:
    """Round scalars under judge/. Rates are over the rows a judge could read; a metric with no
    readable row is left out rather than reported as 0. Unparsable and failed shares are over all
    verdicts, so a broken judge shows up instead of hiding behind a small denominator."""
    out: dict[str, float | None] = {"judge/rows": float(len(verdicts))}
    every = [v[j] for v in verdicts for j in judges]
    if every:
        out["judge/unparsable_rate"] = sum(v.unparsable for v in every) / len(every)
        out["judge/failed_rate"] = sum(bool(v.error) for v in every) / len(every)
    for j in judges:
        col = [v[j] for v in verdicts]
        if col:
            out[f"judge/{j}_unparsable_rate"] = sum(v.unparsable for v in col) / len(col)
    if "correctness" in judges:
        grades = [v["correctness"].grade for v in verdicts if not v["correctness"].unparsable]
        for g in JUDGE_GRADES:
            key = "correct" if g == "CORRECT" else g.lower()
            out[f"judge/{key}_rate"] = mean([float(x == g) for x in grades], empty=None)
    if "answer_hit" in judges:
        hits = [v["answer_hit"].hit for v in verdicts if not v["answer_hit"].unparsable]
        out["judge/answer_hit_rate"] = mean([float(bool(h)) for h in hits], empty=None)
    if {"correctness", "answer_hit"} <= set(judges):
        both = [
            v
            for v in verdicts
            if not v["correctness"].unparsable and not v["answer_hit"].unparsable
        ]
        out["judge/answer_inclusive_rate"] = mean(
            [
                float(bool(v["answer_hit"].hit) and v["correctness"].grade != "CORRECT")
                for v in both
            ],
            empty=None,
        )
    if "rrp" in judges:
        rrp = [v["rrp"] for v in verdicts if not v["rrp"].unparsable]
        out["judge/rrp"] = mean([r.score for r in rrp], empty=None)
        out["judge/rrp_reach"] = mean([r.reach for r in rrp], empty=None)
        out["judge/rrp_redundancy"] = mean([r.redundancy for r in rrp], empty=None)
    if "mqi" in judges:
        level = mean([v["mqi"].level for v in verdicts if not v["mqi"].unparsable], empty=None)
        out["judge/mqi_level"] = level
        if level is not None and mean_tokens is not None:
            base = base_mean_tokens if base_mean_tokens is not None else mean_tokens
            out["judge/mqi"] = mqi(level, base, mean_tokens)
    return {k: v for k, v in out.items() if v is not None}


def run_judges(
    client: Any,
    rows: Sequence[dict],
    judges: Sequence[str],
    base_mean_tokens: float | None = None,
    max_tokens: int = JUDGE_MAX_TOKENS,
) -> dict[str, float]:
    """Judge the rows and aggregate. Rows need question, answer, trace, predicted; `tokens` (or
    the completion's words) gives the length that makes MQI length-aware against the base."""
    verdicts = judge_rows(client, rows, judges, max_tokens)
    return aggregate_verdicts(verdicts, judges, _mean_tokens(rows), base_mean_tokens)


def _row_tokens(row: dict) -> float:
    if row.get("tokens") is not None:
        return float(row["tokens"])
    return float(len(str(row.get("completion") or "").split()))


def _mean_tokens(rows: Sequence[dict]) -> float | None:
    return mean([_row_tokens(r) for r in rows], empty=None)


def verdict_columns(verdicts: list[dict[str, Verdict]], judges: Sequence[str]) -> list[dict]:
    """Flat per-row columns (`<judge>_<field>`) for a `datasets` artifact."""
    return [{f"{j}_{k}": val for j in judges for k, val in asdict(v[j]).items()} for v in verdicts]


def judge_round(
    run_dir: str | Path,
    round_: int,
    judges: Sequence[str],
    cfg: Any,
    client: Any = None,
) -> dict[str, float]:
    """Judge `RUN_DIR/round-<r>/eval`, save per-row verdicts to `round-<r>/judge`, and merge the
    judge/ scalars into that round's line of metrics.jsonl. MQI is length-aware against round 0's
    eval when it exists. The client comes from the teacher section (endpoint, model, key variable)
    with its cache in the run directory, so re-judging a round costs nothing.

    Raises `StageFailed`, writing nothing, when the failed requests pass
    `teacher.max_failure_rate` or the client's circuit breaker opens: metrics from the few
    verdicts that came back would read as a real score; a rerun asks only the failed ones."""
    run_dir = Path(run_dir)
    eval_dir = stage_dir(run_dir, round_, "eval")
    if not eval_dir.exists():
        raise FileNotFoundError(f"{eval_dir}: round {round_} has no eval artifact")
    rows = load_rows(eval_dir)
    base_dir = stage_dir(run_dir, 0, "eval")
    base_tokens = _mean_tokens(load_rows(base_dir)) if base_dir.exists() else None
    own = client is None
    client = client or make_client(cfg.teacher, cache_dir=run_dir / "cache" / "llm")
    try:
        # the teacher's token cap: reasoning models spend most of it before a one-line verdict
        counted = _FailureCounter(client)
        verdicts = judge_rows(counted, rows, judges, max_tokens=cfg.teacher.max_tokens)
        usage = getattr(client, "usage", {})
    finally:
        if own:
            client.close()
    check_failures("judge", counted.failures, cfg.teacher.max_failure_rate)
    metrics = aggregate_verdicts(verdicts, judges, _mean_tokens(rows), base_tokens)
    for key in ("prompt_tokens", "completion_tokens", "cache_hits", "failures"):
        if key in usage:
            metrics[f"judge/usage_{key}"] = float(usage[key])
    ids = [{"example_id": r.get("example_id", ""), "sample": r.get("sample", 0)} for r in rows]
    cols = verdict_columns(verdicts, judges)
    per_row = [{**i, **c} for i, c in zip(ids, cols, strict=True)]
    save_rows(per_row, stage_dir(run_dir, round_, "judge"))
    line = next((m for m in read_metrics(run_dir) if m.get("round") == round_), {"round": round_})
    write_round_metrics(run_dir, {**line, **metrics})
    return metrics


class _FailureCounter:
    """A chat backend that records, per request, the kind of its failure (None when answered), so
    a judge stage is checked on what the endpoint did rather than on what the parsers made of it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.failures: list[str | None] = []

    def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult | ChatFailure]:
        outs = self.client.chat_many(requests)
        self.failures += [o.kind if isinstance(o, ChatFailure) else None for o in outs]
        return outs
