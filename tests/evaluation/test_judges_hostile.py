"""Judge parsers on hostile replies: whatever text (or non-text) a judge sends back, and so whatever
the cache holds on resume, each parser returns a verdict, `unparsable` when nothing can be read,
and in time linear in the reply. Every case here raised or hung before the parsers were hardened."""

from __future__ import annotations

import random
import time

import pytest

from mbt_online.evaluation.judges import (
    AnswerHitVerdict,
    CorrectnessVerdict,
    MQIVerdict,
    RRPVerdict,
    judge_rows,
    parse_answer_hit,
    parse_correctness,
    parse_mqi,
    parse_rrp,
    rrp_from_marks,
)
from mbt_online.llm.wire import ChatResult
from mbt_online.scoring.metrics import extract_answer, split_trace

PARAS = ["We read the first one. Then the next.", "So it is Paris."]
PARSERS = {
    "correctness": (parse_correctness, CorrectnessVerdict),
    "answer_hit": (parse_answer_hit, AnswerHitVerdict),
    "rrp": (lambda text: parse_rrp(text, PARAS), RRPVerdict),
    "mqi": (parse_mqi, MQIVerdict),
}
DIGITS = "9" * 5000  # past Python's 4,300-digit limit on int("...")

HOSTILE = {
    "deep_array_after_level": '{"level":' + "[" * 5000,
    "deep_objects": '{"a":' * 5000,
    "deep_then_verdict": '{"a":' * 3000 + '\n{"level": 2, "phases": []}',
    "huge_json_int": '{"level": ' + DIGITS + ', "answer_paragraph": ' + DIGITS + "}",
    "json_int_past_int64": '{"level": ' + "7" * 30 + ', "answer_paragraph": ' + "7" * 30 + "}",
    "huge_string_int": '{"level": "P' + DIGITS + '", "answer_paragraph": "[P' + DIGITS + ']"}',
    "huge_float": '{"level": 1e308, "answer_paragraph": -1e308, "labels": []}',
    "nan_and_infinity": '{"level": NaN, "answer_paragraph": Infinity, "labels": null}',
    "huge_answer_phrase": "answer_paragraph: " + DIGITS,
    "huge_label_line": "P" + DIGITS + ": PROGRESS\nP1: REDUNDANT",
    "huge_level_phrase": "level: " + DIGITS,
    "huge_label_keys": '{"answer_paragraph": 1, "labels": {"P' + DIGITS + '": "PROGRESS"}}',
    "non_dict_json": '[1, 2, {"x": [3]}] "level" 4.5 null true',
    "null_fields": '{"level": null, "phases": null, "answer_paragraph": null, "labels": null}',
    "wrong_types": '{"level": {"v": 3}, "phases": [{"x": 1}, [1], null, 3, "filtering"],'
    ' "answer_paragraph": [1], "labels": [{"x": 1}, null]}',
    "label_dict_of_junk": '{"answer_paragraph": 1, "labels": {"P1": [1], "x": null, "3": {}}}',
    "many_braces": "{" * 200_000,
    "many_open_keys": '{"k":' * 40_000 + "}" * 10,
    "very_long_text": "GRADE: maybe " * 100_000,
    "control_and_surrogate": "\x00\x1b[31m\ud800 GRADE:\x00 CORRECT? \u202e",
    "empty": "",
}
NOT_TEXT = {"none": None, "int": 5, "float": 1.5, "list": ["GRADE: CORRECT"], "dict": {"a": 1}}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("judge", PARSERS)
@pytest.mark.parametrize("case", HOSTILE)
def test_no_parser_raises_on_a_hostile_reply(judge, case):
    parse, kind = PARSERS[judge]
    start = time.perf_counter()
    verdict = parse(HOSTILE[case])
    assert isinstance(verdict, kind)
    assert verdict.raw == HOSTILE[case]
    assert time.perf_counter() - start < 5


def test_a_deeply_nested_reply_is_unparsable_and_a_verdict_after_it_still_reads():
    # the reply: `{"level":` and 5,000 `[` raised RecursionError, on every resume
    reply = '{"level":' + "[" * 5000
    assert parse_mqi(reply).unparsable and parse_mqi(reply).level is None
    assert parse_rrp(reply, PARAS).unparsable
    after = parse_mqi(HOSTILE["deep_then_verdict"])
    assert (after.level, after.unparsable) == (2, False)


@pytest.mark.parametrize("case", ["huge_json_int", "json_int_past_int64", "huge_string_int"])
def test_numbers_too_long_to_be_a_level_or_paragraph_read_as_none(case):
    # a verdict keeps its (unparsable) answer paragraph: it must still fit an int64 column
    rrp, mqi = parse_rrp(HOSTILE[case], PARAS), parse_mqi(HOSTILE[case])
    assert (rrp.answer_paragraph, rrp.unparsable) == (None, True)
    assert (mqi.level, mqi.unparsable) == (None, True)


@pytest.mark.parametrize("judge", PARSERS)
@pytest.mark.parametrize("value", NOT_TEXT.values(), ids=list(NOT_TEXT))
def test_a_reply_that_is_not_text_is_unparsable(judge, value):
    parse, kind = PARSERS[judge]
    verdict = parse(value)
    assert isinstance(verdict, kind) and verdict.unparsable and verdict.raw == ""


def test_a_bytes_reply_is_decoded():
    assert parse_correctness(b"GRADE: CORRECT\xff").grade == "CORRECT"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("judge", "reply"),
    [
        ("rrp", "P1" + " " * 20_000 + "x"),  # two `\s*` around an optional `:` were quadratic
        ("mqi", '{"level": "' + " " * 1500 + 'x"}'),  # three `\s*` in `_as_int` were cubic
        ("rrp", '{"answer_paragraph": "[' + " " * 20_000 + 'x", "labels": []}'),
    ],
)
def test_whitespace_runs_parse_in_linear_time(judge, reply):
    start = time.perf_counter()
    assert PARSERS[judge][0](reply).unparsable
    assert time.perf_counter() - start < 1


PIECES = [
    "{", "}", "[", "]", '"', ":", ",", "\\", " " * 50, "\n", "P1", "P2: PROGRESS", "REDUNDANT",
    '"level"', '"phases"', '"labels"', '"answer_paragraph"', "level: 3", "HIT: YES", "GRADE:",
    "CORRECT", "null", "NaN", "1e999", DIGITS[:50], "-", "\x00", "\ud800", "**", "```json",
]  # fmt: skip


@pytest.mark.timeout(120)
def test_random_splices_of_reply_fragments_never_raise():
    rng = random.Random(19)
    for _ in range(400):
        reply = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 300)))
        for parse, kind in PARSERS.values():
            assert isinstance(parse(reply), kind)


class _CachedReplies:
    """A backend that answers every request with the same text, as a cache would on resume."""

    def __init__(self, text: str) -> None:
        self.text = text

    def chat_many(self, requests):
        return [ChatResult([self.text]) for _ in requests]


def test_judge_rows_survive_a_hostile_reply_for_every_judge():
    row = {"question": "Q?", "answer": "Paris", "predicted": "Paris", "trace": "\n\n".join(PARAS)}
    judges = list(PARSERS)
    for reply in (HOSTILE["deep_array_after_level"], HOSTILE["huge_label_line"]):
        (verdicts,) = judge_rows(_CachedReplies(reply), [row], judges)
        assert all(verdicts[j].unparsable for j in judges)


@pytest.mark.timeout(120)
def test_rrp_numbers_on_degenerate_traces_take_linear_time():
    # sentence splitting was quadratic on a run of dots and on a line of initials or "Mr."s
    paragraphs = ["." * 200_000, "J. " * 20_000, "Mr. " * 20_000, "a.b.c." * 10_000 + " x. y"]
    start = time.perf_counter()
    reach, redundancy, _ = rrp_from_marks(paragraphs, 2, ["PROGRESS"] * 4)
    assert time.perf_counter() - start < 2
    assert (reach, redundancy) == (0.5, 0)  # one sentence each: no boundary is real


def test_answer_extraction_on_huge_replies_takes_linear_time():
    start = time.perf_counter()
    assert extract_answer("<answer>" * 200_000 + "x</answer>") == "x"
    assert extract_answer("</answer><answer" * 200_000) is None
    assert split_trace("<think>" + "." * 1_000_000) == "." * 1_000_000
    assert time.perf_counter() - start < 2
