"""Judges: parsers on messy replies, RRP/MQI numbers checked by hand, aggregation, and
`judge_round` on a run directory against a local server that fails mid-stage and comes back."""

from __future__ import annotations

import json
import re

import pytest
from datasets import load_from_disk
from fake_llm_server import FakeLLMServer

from mbt_online.config import Config, TeacherConfig
from mbt_online.evaluation.judges import (
    JUDGES,
    AnswerHitVerdict,
    CorrectnessVerdict,
    MQIVerdict,
    RRPVerdict,
    aggregate_verdicts,
    judge_one,
    judge_round,
    judge_rows,
    parse_answer_hit,
    parse_correctness,
    parse_mqi,
    parse_rrp,
    rrp_from_marks,
    run_judges,
)
from mbt_online.llm.client import LLMClient
from mbt_online.rundir.stages import save_rows, stage_dir

# --------------------------------------------------------------------------------------------------
# parsers


@pytest.mark.parametrize(
    ("text", "grade"),
    [
        ("The names match.\nGRADE: CORRECT", "CORRECT"),
        ("It is wrong.\n**GRADE:** INCORRECT", "INCORRECT"),
        ("grade: not attempted", "NOT_ATTEMPTED"),
        ("GRADE: NOT-ATTEMPTED\n", "NOT_ATTEMPTED"),
        ("First GRADE: CORRECT, on reflection\nGRADE: INCORRECT\nThanks!", "INCORRECT"),
        ("Reasoning here.\nINCORRECT", "INCORRECT"),
        ("Reasoning here.\nC", "NOT_ATTEMPTED"),
        ("This answer is not correct.", None),  # prose is never read as a verdict
        ("CORRECT or INCORRECT, hard to say", None),
        ("", None),
    ],
)
def test_parse_correctness_accepts_messy_verdicts(text, grade):
    v = parse_correctness(text)
    assert (v.grade, v.unparsable, v.raw) == (grade, grade is None, text)


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Derived in step 2.\nHIT: YES", True),
        ("hit: no.", False),
        ("**HIT**: Yes", True),
        ("It never gets there.\nNo", False),
        ("maybe", None),
        ("", None),
    ],
)
def test_parse_answer_hit(text, hit):
    v = parse_answer_hit(text)
    assert (v.hit, v.unparsable) == (hit, hit is None)


# 2, 1 and 3 sentences
PARAS = [
    "We read the first one. Then the next.",
    "So it is Paris.",
    "Paris. Again Paris. Yes, Paris.",
]


def test_rrp_numbers_by_hand():
    # answer at the end of paragraph 2: 3 of 6 sentences; 3 redundant of 6 -> H(0.5, 0.5) = 0.5
    assert rrp_from_marks(PARAS, 2, ["PROGRESS", "PROGRESS", "REDUNDANT"]) == (0.5, 0.5, 0.5)
    reach, red, score = rrp_from_marks(PARAS, 1, ["PROGRESS", "VERIFICATION", "REDUNDANT"])
    assert (reach, red) == (pytest.approx(2 / 6), 0.5)
    assert score == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))  # 4/7
    assert rrp_from_marks(PARAS, 0, ["PROGRESS"] * 3) == (1.0, 0.0, 0.0)  # never reached


@pytest.mark.parametrize(
    "text",
    [
        '{"answer_paragraph": 2, "labels": ["PROGRESS", "PROGRESS", "REDUNDANT"]}',
        'Here you go:\n```json\n{"answer_paragraph": "P2", "labels": ["progress", "Progress", '
        '"redundant"]}\n```',
        '{"answer_paragraph": 2.0, "labels": {"P1": "PROGRESS", "P2": "PROGRESS", '
        '"P3": "REDUNDANT"}}',
        "answer_paragraph: 2\n[P1] PROGRESS\n[P2]: PROGRESS\nP3 - REDUNDANT",
    ],
)
def test_parse_rrp_reads_json_in_prose_and_line_formats(text):
    v = parse_rrp(text, PARAS)
    assert not v.unparsable
    assert (v.answer_paragraph, v.labels, v.score) == (
        2,
        ["PROGRESS", "PROGRESS", "REDUNDANT"],
        0.5,
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"answer_paragraph": 2, "labels": ["PROGRESS", "REDUNDANT"]}',  # wrong length
        '{"answer_paragraph": 7, "labels": ["PROGRESS", "PROGRESS", "REDUNDANT"]}',  # out of range
        '{"answer_paragraph": 1, "labels": ["PROGRESS", "GOOD", "REDUNDANT"]}',  # unknown label
        '{"answer_paragraph": 1, "labels": [',  # cut off
        "I think paragraph two is where it happens.",
    ],
)
def test_parse_rrp_marks_unreadable_replies(text):
    v = parse_rrp(text, PARAS)
    assert v.unparsable and v.score is None and v.raw == text


def test_parse_mqi_normalises_phase_names_and_checks_the_level():
    v = parse_mqi(
        'Sure! {"level": "4", "phases": ["Self-Correction", "planning", "Understanding '
        'and filtering", "magic", "verification"]} Hope that helps.'
    )
    assert (v.level, v.unparsable) == (4, False)
    assert v.phases == ["understanding", "planning", "self_correction", "verification"]
    assert parse_mqi("Level: 3 (plan and monitoring)").level == 3
    assert parse_mqi('{"level": 9, "phases": []}').unparsable
    assert parse_mqi("no idea").unparsable


# --------------------------------------------------------------------------------------------------
# aggregation


def test_aggregate_verdicts_by_hand():
    c = [
        CorrectnessVerdict("CORRECT"),
        CorrectnessVerdict("INCORRECT"),
        CorrectnessVerdict(None, unparsable=True),
        CorrectnessVerdict("NOT_ATTEMPTED"),
    ]
    h = [
        AnswerHitVerdict(True),
        AnswerHitVerdict(True),
        AnswerHitVerdict(False),
        AnswerHitVerdict(None, unparsable=True, error="timeout: x"),
    ]
    r = [
        RRPVerdict(2, [], 0.5, 0.5, 0.5),
        RRPVerdict(0, [], 1.0, 0.0, 0.0),
        RRPVerdict(None, unparsable=True),
        RRPVerdict(1, [], 0.2, 0.0, 0.8),
    ]
    m = [MQIVerdict(4), MQIVerdict(2), MQIVerdict(None, unparsable=True), MQIVerdict(0)]
    verdicts = [
        {"correctness": a, "answer_hit": b, "rrp": x, "mqi": y}
        for a, b, x, y in zip(c, h, r, m, strict=True)
    ]
    out = aggregate_verdicts(verdicts, JUDGES, mean_tokens=50.0, base_mean_tokens=100.0)
    assert out["judge/rows"] == 4
    assert out["judge/correct_rate"] == out["judge/incorrect_rate"] == pytest.approx(1 / 3)
    assert out["judge/not_attempted_rate"] == pytest.approx(1 / 3)
    assert out["judge/answer_hit_rate"] == pytest.approx(2 / 3)
    # rows with both verdicts readable: 0 (hit, correct) and 1 (hit, incorrect) -> 1 of 2
    assert out["judge/answer_inclusive_rate"] == 0.5
    assert out["judge/rrp"] == pytest.approx((0.5 + 0.0 + 0.8) / 3)
    assert out["judge/rrp_reach"] == pytest.approx((0.5 + 1.0 + 0.2) / 3)
    assert out["judge/mqi_level"] == 2.0 and out["judge/mqi"] == 4.0  # 2 * 100 / 50
    assert out["judge/unparsable_rate"] == 4 / 16 and out["judge/failed_rate"] == 1 / 16
    assert out["judge/correctness_unparsable_rate"] == 0.25


def test_a_judge_with_nothing_readable_reports_no_rate():
    out = aggregate_verdicts([{"mqi": MQIVerdict(None, unparsable=True)}], ["mqi"], 10.0)
    assert "judge/mqi_level" not in out and "judge/mqi" not in out
    assert out["judge/unparsable_rate"] == 1.0


# --------------------------------------------------------------------------------------------------
# through a server


def judge_reply(payload: dict, i: int) -> str:
    """A well-behaved but chatty judge model, reading which judge asks from the prompt."""
    prompt = payload["messages"][-1]["content"]
    if "GRADE:" in prompt:
        gold = re.search(r"Gold answer: (.*)", prompt).group(1)
        pred = re.search(r"Predicted answer: (.*)", prompt).group(1)
        return f"Compared.\n**GRADE: {'CORRECT' if gold == pred else 'INCORRECT'}**"
    if "HIT:" in prompt:
        return "It derives the answer.\nHIT: yes"
    if "answer_paragraph" in prompt:
        n = int(re.search(r"\((\d+) paragraphs\)", prompt).group(1))
        labels = ["PROGRESS"] * (n - 1) + ["REDUNDANT"]
        return f"```json\n{json.dumps({'answer_paragraph': 1, 'labels': labels})}\n```"
    return (
        'Rating: {"level": 4, "phases": ["understanding", "planning", "execution", "verification"]}'
    )


TRACE = (
    "We read the first one. Then the next.\n\nSo the answer is Paris.\n\nParis again. Still Paris."
)
ROWS = [
    {
        "example_id": "a",
        "sample": 0,
        "question": "Capital?",
        "answer": "Paris",
        "predicted": "Paris",
        "trace": TRACE,
        "completion": TRACE,
        "tokens": 50,
    },
    {
        "example_id": "b",
        "sample": 0,
        "question": "Capital of France?",
        "answer": "Paris",
        "predicted": "Lyon",
        "trace": TRACE,
        "completion": TRACE,
        "tokens": 50,
    },
    {
        "example_id": "c",
        "sample": 0,
        "question": "Capital?",
        "answer": "Paris",
        "predicted": "",
        "trace": "",
        "completion": "",
        "tokens": 50,
    },
]


def client_for(server: FakeLLMServer, **kw) -> LLMClient:
    return LLMClient(
        server.base_url, "judge", max_retries=1, backoff_s=0.001, max_backoff_s=0.01, **kw
    )


def test_single_judges_through_the_client():
    with FakeLLMServer(responder=judge_reply) as server, client_for(server) as client:
        row = {"question": "Capital?", "answer": "Paris", "predicted": "Paris", "trace": TRACE}
        assert judge_one(client, "correctness", row).grade == "CORRECT"
        assert judge_one(client, "answer_hit", row).hit is True
        rrp = judge_one(client, "rrp", row)
        mqi = judge_one(client, "mqi", row)
    # 5 sentences: answer paragraph 1 ends at 2 (0.4); paragraph 3 redundant holds 2 (0.4)
    assert (rrp.answer_paragraph, rrp.reach, rrp.redundancy) == (1, 0.4, 0.4)
    assert rrp.score == pytest.approx(0.6)
    assert (mqi.level, mqi.phases) == (
        4,
        ["understanding", "planning", "execution", "verification"],
    )
    assert all(p["temperature"] == 0.0 for p in server.payloads)


def test_run_judges_decides_empty_rows_without_a_call():
    with FakeLLMServer(responder=judge_reply) as server, client_for(server) as client:
        metrics = run_judges(client, ROWS, JUDGES, base_mean_tokens=100.0)
    assert server.chat_requests == 8  # 4 judges x 2 rows; the empty row needs none
    assert metrics["judge/correct_rate"] == pytest.approx(1 / 3)
    assert metrics["judge/not_attempted_rate"] == pytest.approx(1 / 3)
    assert metrics["judge/answer_hit_rate"] == pytest.approx(2 / 3)
    assert metrics["judge/answer_inclusive_rate"] == pytest.approx(1 / 3)  # row b
    assert metrics["judge/rrp"] == pytest.approx((0.6 + 0.6 + 0.0) / 3)
    assert metrics["judge/mqi_level"] == pytest.approx(8 / 3)
    assert metrics["judge/mqi"] == pytest.approx(8 / 3 * 100 / 50)
    assert metrics["judge/unparsable_rate"] == 0.0


def test_unknown_judge_is_refused():
    with pytest.raises(ValueError, match="unknown judge"):
        judge_rows(None, ROWS, ["vibes"])


def make_run(tmp_path):
    run = tmp_path / "run"
    save_rows([{**r, "tokens": 100} for r in ROWS], stage_dir(run, 0, "eval"))
    save_rows(ROWS, stage_dir(run, 1, "eval"))
    (run / "metrics.jsonl").write_text(json.dumps({"round": 1, "eval/accuracy": 0.5}) + "\n")
    return run


def test_judge_round_survives_a_server_that_dies_and_resumes_with_nothing_lost(tmp_path):
    run = make_run(tmp_path)
    cache = run / "cache" / "llm"
    server = FakeLLMServer(responder=judge_reply).start()
    port = server.port
    server.plan = ["ok", "ok", "ok", "die"]
    # one failed request in four is under this threshold (the default, 0.2, would fail the stage)
    tolerant = Config(teacher=TeacherConfig(max_failure_rate=0.5))
    with client_for(server, concurrency=1, cache_dir=cache) as client:
        first = judge_round(run, 1, ["correctness", "mqi"], tolerant, client=client)
    # 4 calls: 3 answered, then the server went away; the failure is recorded, the round goes on
    assert first["judge/failed_rate"] == pytest.approx(1 / 6)
    table = load_from_disk(str(stage_dir(run, 1, "judge")))
    assert table["example_id"] == ["a", "b", "c"]
    assert table["mqi_unparsable"] == [False, True, False]
    assert table["mqi_error"][1].startswith("connection")

    back = FakeLLMServer(port=port, responder=judge_reply)
    with back, client_for(back, cache_dir=cache) as client:
        again = judge_round(run, 1, ["correctness", "mqi"], Config(), client=client)
        assert client.usage["cache_hits"] == 3
    assert back.chat_requests == 1  # only the lost verdict is asked again
    assert again["judge/failed_rate"] == 0.0 and again["judge/unparsable_rate"] == 0.0
    assert again["judge/mqi"] == pytest.approx(again["judge/mqi_level"] * 100 / 50)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["eval/accuracy"] == 0.5  # merged, not duplicated
    assert lines[0]["judge/correct_rate"] == pytest.approx(1 / 3)


def test_judge_round_builds_its_client_from_the_teacher_section(tmp_path, monkeypatch):
    key = "sk-judge-secret-991"
    monkeypatch.setenv("MBT_TEST_JUDGE_KEY", key)
    run = make_run(tmp_path)
    with FakeLLMServer(responder=judge_reply) as server:
        server.plan = ["500", "malformed"]  # retried by the client's own policy
        cfg = Config(
            teacher=TeacherConfig(
                base_url=server.base_url,
                model="judge",
                api_key_env="MBT_TEST_JUDGE_KEY",
                concurrency=1,
            )
        )
        metrics = judge_round(run, 1, ["answer_hit"], cfg)
    assert set(server.auth) == {f"Bearer {key}"}
    assert metrics["judge/answer_hit_rate"] == pytest.approx(2 / 3)
    assert metrics["judge/usage_failures"] == 0.0
    assert list((run / "cache" / "llm").rglob("*.json"))
    files = [p for p in run.rglob("*") if p.is_file()]
    assert not [p for p in files if key.encode() in p.read_bytes()]


def test_judge_round_without_eval_artifact_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="round 3 has no eval"):
        judge_round(tmp_path, 3, ["mqi"], Config())
