"""The paper's control rows on the structured and the LLM teacher: teacher distillation, Distill-R
(MBT-R's content without the five phases), Direct-R (MBT-R of the teacher's own solution), and
MBT-R's check on the testbed world re-reading a real link."""

from __future__ import annotations

import random

from fake_llm_server import FakeLLMServer
from twin_world import with_slip

from mbt_online.config import TeacherConfig
from mbt_online.llm.client import LLMClient
from mbt_online.scoring.behaviour import trace_behaviour
from mbt_online.scoring.metrics import PHASES, detect_phases
from mbt_online.sim.reasoner import unregulated_trace
from mbt_online.tasks.world import parse_sentence, twin_slip
from mbt_online.teachers.contract import TeachRequest
from mbt_online.teachers.llm import LLMTeacher
from mbt_online.teachers.structured import StructuredTeacher


class Rates:
    p_loop = p_distractor_switch = p_overthink = 0.0
    p_hop_slip = 1.0

    def __init__(self, repair: float) -> None:
        self.p_slip_repair = repair


def teach(mode: str, ex, draft: str | None = None) -> str:
    (res,) = StructuredTeacher(style="student").teach([TeachRequest(ex, mode, draft)])
    assert res.verified, res.reasons
    return res.trace


def facts(text: str) -> set[str]:
    """The world fact sentences a trace states (the parts after 'path: ' or 'Check: ')."""
    out = set()
    for line in text.splitlines():
        for part in line.replace("Check: ", ": ").split(": ")[1:]:
            for sentence in part.split(". "):
                s = sentence.strip().removeprefix("So ").rstrip(".") + "."
                if parse_sentence(s):
                    out.add(s)
    return out


def test_mbt_r_of_a_slipped_draft_keeps_the_slip_names_the_look_alike_and_checks_the_link():
    ex = with_slip(3)
    slip = twin_slip(ex)
    draft, _ = unregulated_trace(ex, random.Random(0), Rates(repair=0.0))
    assert slip.wrong[0] in draft and ex.answer not in draft.split("<answer>")[1]
    trace = teach("mbt-r", ex, draft)
    lines = trace.splitlines()
    at = next(i for i, ln in enumerate(lines) if slip.wrong[0] in ln)
    assert lines[at + 1] == slip.repair_line()
    assert lines[at + 2].endswith(ex.hops[slip.hop].evidence)
    assert lines[-1].startswith(f"Check: {ex.hops[slip.hop].evidence}")  # a real link, quoted
    beh = trace_behaviour(trace, ex)
    assert beh["slipped"] and beh["caught"] and beh["real_link"]


def test_distill_r_has_mbt_rs_verified_content_without_its_phase_lines():
    ex = with_slip(3)
    draft, _ = unregulated_trace(ex, random.Random(0), Rates(repair=0.0))
    mbt_r, distill_r = teach("mbt-r", ex, draft), teach("distill-r", ex, draft)
    gold = {h.evidence for h in ex.hops}
    assert facts(distill_r) == gold == facts(mbt_r) - {twin_slip(ex).wrong[0]}
    assert set(detect_phases(mbt_r)) == set(PHASES)
    assert not {"understanding", "planning", "self_correction", "verification"} & set(
        detect_phases(distill_r)
    )
    assert "Check" not in distill_r and "Wait" not in distill_r and ex.answer in distill_r


def test_teacher_distillation_and_direct_r_start_from_the_teachers_own_solution():
    ex = with_slip(2)
    own = teach("distill", ex)
    assert twin_slip(ex).wrong[0] not in own and own.splitlines()[-1].endswith(f"{ex.answer}.")
    assert "Check" not in own
    direct = teach("direct-r", ex)
    assert direct == teach("mbt-s", ex)  # a rule-based teacher's own solution has no slip
    assert direct.splitlines()[:-1] == own.splitlines()  # its lines, then the check of a link
    assert trace_behaviour(direct, ex)["real_link"]


def test_llm_teacher_asks_each_row_its_own_prompt(tmp_path):
    ex = with_slip(2)
    good = "\n".join(teach("mbt-r", ex, "").splitlines())
    guide = "Guide: follow the hops."

    def respond(payload: dict, i: int) -> str:
        last = payload["messages"][-1]["content"]
        return guide if "plain-text guide" in last and len(payload["messages"]) == 1 else good

    cfg = TeacherConfig(backend="openai", max_tries=1, samples=1, concurrency=1, timeout_s=2.0)
    with FakeLLMServer(responder=respond) as server:
        client = LLMClient(server.base_url, "m", concurrency=1, timeout_s=2.0, max_retries=1)
        reqs = [
            TeachRequest(ex, "distill"),
            TeachRequest(ex, "distill-r", "<think>my draft</think>"),
            TeachRequest(ex, "direct-r"),
        ]
        results = LLMTeacher(client, cfg).teach(reqs)
    assert all(r.verified for r in results)
    by_last = [p["messages"] for p in server.payloads]
    distill = next(m for m in by_last if len(m) == 1 and "plain prose" in m[0]["content"])
    assert "Correct answer" not in distill[0]["content"]  # the teacher solves without the answer
    rewrites = [m for m in by_last if len(m) == 3]
    distill_r = next(m for m in rewrites if "concise, correct derivation" in m[2]["content"])
    assert "my draft" in distill_r[2]["content"] and "five phases" not in distill_r[2]["content"]
    direct = next(m for m in rewrites if "five phases" in m[2]["content"])
    assert guide in direct[2]["content"]  # the teacher's own solution is the draft
