"""What the teacher sees and what training gets, on hand-made scored rollouts."""

from __future__ import annotations

from mbt_online.config import load_config
from mbt_online.tasks.base import Example
from mbt_online.tasks.mixture import round_questions
from mbt_online.teachers.selection import is_failing, teach_requests
from mbt_online.training.build import best_student, dpo_pairs, sft_rows

EX = Example(id="q1", question="Who?", documents=[("A", "A is B.")], answer="B")
EX2 = Example(id="q2", question="What?", documents=[("C", "C is D.")], answer="D")
EXAMPLES = {"q1": EX, "q2": EX2}


def row(qid: str, sample: int, reward: float, correct: float = 1.0, **kw) -> dict:
    base = {
        "example_id": qid,
        "sample": sample,
        "reward": reward,
        "correct": correct,
        "truncated": False,
        "answer_inclusive": False,
        "over_budget": 0.0,
        "redundancy": 0.0,
        "completion": f"{qid}-{sample}",
    }
    return {**base, **kw}


ROWS = [
    row("q1", 0, 1.2),
    row("q1", 1, -0.8, correct=0.0, truncated=True),
    row("q1", 2, 0.1, correct=0.0, answer_inclusive=True),
    row("q2", 0, 1.0),
    row("q2", 1, 0.9, redundancy=0.5),
]


def cfg(*overrides: str):
    """The default config with one rewrite per question, whatever the quickstart ships with."""
    return load_config(None, ["teacher.rewrites_per_question=1", *overrides])


def test_failing_means_wrong_collapsed_or_wasteful():
    assert [is_failing(r) for r in ROWS] == [False, True, True, False, True]


def test_mbt_r_rewrites_lowest_reward_failing_drafts():
    reqs = teach_requests(ROWS, EXAMPLES, cfg("teacher.mode=mbt-r"))
    assert [(r.example.id, r.mode, r.draft) for r in reqs] == [
        ("q1", "mbt-r", "q1-1"),
        ("q2", "mbt-r", "q2-1"),
    ]
    reqs = teach_requests(
        ROWS, EXAMPLES, cfg("teacher.mode=mbt-r", "teacher.rewrites_per_question=2")
    )
    assert [r.draft for r in reqs] == ["q1-1", "q1-2", "q2-1"]
    reqs = teach_requests(
        ROWS,
        EXAMPLES,
        cfg("teacher.mode=mbt-r", "teacher.rewrite=all", "teacher.rewrites_per_question=5"),
    )
    assert len(reqs) == 5


def test_mbt_s_and_both_and_none():
    s = teach_requests(ROWS, EXAMPLES, cfg("teacher.mode=mbt-s"))
    assert [(r.example.id, r.mode, r.draft) for r in s] == [
        ("q1", "mbt-s", None),
        ("q2", "mbt-s", None),
    ]
    both = teach_requests(ROWS, EXAMPLES, cfg("teacher.mode=both"))
    assert [r.mode for r in both] == ["mbt-s", "mbt-r", "mbt-s", "mbt-r"]
    assert teach_requests(ROWS, EXAMPLES, cfg("teacher.mode=none")) == []


def test_sft_rows_from_verified_teacher_traces_only():
    taught = [
        {"example_id": "q1", "mode": "mbt-r", "trace": "We check A.", "verified": True},
        {"example_id": "q2", "mode": "mbt-r", "trace": "junk", "verified": False},
    ]
    rows = sft_rows(ROWS, taught, EXAMPLES, cfg())
    assert len(rows) == 1 and rows[0]["example_id"] == "q1"
    assert rows[0]["completion"][0]["content"] == (
        "<think>\nWe check A.\n</think>\n\n<answer>B</answer>"
    )
    assert rows[0]["prompt"][-1]["role"] == "user" and "Who?" in rows[0]["prompt"][-1]["content"]


def test_self_distillation_uses_best_correct_self_terminated_traces_within_the_budget():
    rows = sft_rows(ROWS, [], EXAMPLES, cfg("teacher.mode=none"))
    # the default budget: two rows a question, best reward first
    assert [r["completion"][0]["content"] for r in rows] == ["q1-0", "q2-0", "q2-1"]
    one = sft_rows(ROWS, [], EXAMPLES, cfg("teacher.mode=none", "train.sft.max_rows_per_question=1"))
    assert [r["completion"][0]["content"] for r in one] == ["q1-0", "q2-0"]
    assert best_student([row("q", 0, 2.0, truncated=True), row("q", 1, 0.5)])["sample"] == 1
    assert best_student([row("q", 0, 2.0, correct=0.0)]) is None


def test_dpo_pairs_respect_margin_and_pair_with_worst():
    chosen = {"q1": [("teacher-q1", 1.5)], "q2": [("teacher-q2", 1.2)]}
    pairs = dpo_pairs(ROWS, chosen, EXAMPLES, cfg("train.dpo.margin=0.5"))
    # q1: 1.5 - (-0.8) = 2.3 passes; q2: 1.2 - 0.9 = 0.3 is under the margin
    assert [
        (p["example_id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
    ] == [("q1", "teacher-q1", "q1-1")]
    assert pairs[0]["margin"] == 1.5 - (-0.8)
    loose = dpo_pairs(ROWS, chosen, EXAMPLES, cfg("train.dpo.margin=0.2"))
    assert [p["example_id"] for p in loose] == ["q1", "q2"]


def test_dpo_student_best_as_chosen():
    pairs = dpo_pairs(
        ROWS, {}, EXAMPLES, cfg("train.dpo.chosen=student_best", "train.dpo.margin=0.05")
    )
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("q1-0", "q1-1"),
        ("q2-0", "q2-1"),
    ]


def test_dpo_student_then_teacher_falls_back_per_question():
    # q3 has no correct student trace: its pair takes the teacher's; q1 keeps its own best
    rows = [*ROWS, row("q3", 0, -0.5, correct=0.0), row("q3", 1, -0.9, correct=0.0)]
    examples = {**EXAMPLES, "q3": Example(id="q3", question="Why?", documents=[], answer="E")}
    chosen = {"q1": [("teacher-q1", 1.5)], "q3": [("teacher-q3", 1.1)]}
    pairs = dpo_pairs(
        rows, chosen, examples, cfg("train.dpo.chosen=student_then_teacher", "train.dpo.margin=0.5")
    )
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("q1-0", "q1-1"),
        ("teacher-q3", "q3-1"),
    ]
    assert pairs[1]["margin"] == 1.1 - (-0.9)


def test_round_questions_rotate():
    exs = [Example(id=str(i), question="", documents=[], answer="") for i in range(5)]
    assert [e.id for e in round_questions(exs, 1, 2)] == ["0", "1"]
    assert [e.id for e in round_questions(exs, 2, 2)] == ["2", "3"]
    assert [e.id for e in round_questions(exs, 3, 2)] == ["4", "0"]
    assert round_questions(exs, 1, None) == exs


def test_round_questions_mix_benchmarks_in_every_round():
    hotpot = [
        Example(id=f"h{i}", question="", documents=[], answer="", source="hotpotqa")
        for i in range(4)
    ]
    wiki = [
        Example(id=f"w{i}", question="", documents=[], answer="", source="2wiki") for i in range(2)
    ]
    exs = hotpot + wiki  # as loaded: one file after the other
    assert [e.id for e in round_questions(exs, 1, 3)] == ["h0", "w0", "h1"]
    assert [e.id for e in round_questions(exs, 2, 3)] == ["w1", "h2", "h3"]
    seen = [e.id for r in (1, 2) for e in round_questions(exs, r, 3)]
    assert sorted(seen) == sorted(e.id for e in exs)  # two rounds cover the pool once


def test_paper_self_distillation_keeps_correct_finished_traces_in_sample_order_unranked():
    group = [
        row("q1", 0, 0.2),
        row("q1", 1, 1.5),
        row("q1", 2, 0.9),
        row("q1", 3, 2.0, truncated=True),
        row("q1", 4, 3.0, correct=0.0),
    ]
    ranked = sft_rows(group, [], EXAMPLES, cfg("teacher.mode=none"))
    paper = sft_rows(group, [], EXAMPLES, cfg("teacher.mode=none", "train.sft.select=correct"))
    assert [r["completion"][0]["content"] for r in ranked] == ["q1-1", "q1-2"]
    assert [r["completion"][0]["content"] for r in paper] == ["q1-0", "q1-1"]
    lifted = sft_rows(
        group,
        [],
        EXAMPLES,
        cfg("teacher.mode=none", "train.sft.select=correct", "train.sft.max_rows_per_question=null"),
    )
    assert len(lifted) == 3  # every correct finished trace, the truncated and wrong ones never


def test_every_method_is_held_to_the_same_rows_per_question():
    taught = [
        {"example_id": "q1", "mode": m, "trace": f"We check A, try {i}.", "verified": True}
        for i, m in enumerate(["mbt-r", "mbt-r", "mbt-r", "distill-r"])
    ] + [{"example_id": "q2", "mode": "mbt-s", "trace": "We check C.", "verified": True}]
    rows = sft_rows(ROWS, taught, EXAMPLES, cfg("teacher.mode=mbt-r"))
    assert [(r["example_id"], r["source"]) for r in rows] == [
        ("q1", "mbt-r"),
        ("q1", "mbt-r"),
        ("q2", "mbt-s"),
    ]
    lifted = sft_rows(
        ROWS, taught, EXAMPLES, cfg("teacher.mode=mbt-r", "train.sft.max_rows_per_question=null")
    )
    assert len(lifted) == 5


def test_paper_rows_ask_the_teacher_per_question_or_per_failing_draft():
    for mode in ("distill", "direct-r"):
        reqs = teach_requests(ROWS, EXAMPLES, cfg(f"teacher.mode={mode}"))
        assert [(r.example.id, r.mode, r.draft) for r in reqs] == [
            ("q1", mode, None),
            ("q2", mode, None),
        ]
    reqs = teach_requests(ROWS, EXAMPLES, cfg("teacher.mode=distill-r"))
    assert [(r.example.id, r.mode, r.draft) for r in reqs] == [
        ("q1", "distill-r", "q1-1"),
        ("q2", "distill-r", "q2-1"),
    ]
