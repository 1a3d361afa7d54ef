"""The world's behavioural metrics: a slip, its catch, its repair, and verification of real links."""

from __future__ import annotations

import json

from twin_world import with_slip

from mbt_online.prompts import format_target
from mbt_online.scoring.behaviour import behaviour_column, behaviour_metrics, trace_behaviour
from mbt_online.tasks.base import Example
from mbt_online.tasks.world import answer_line, clean_lines, hop_lines, hop_path, twin_slip


def slipped_trace(ex: Example, repaired: bool) -> str:
    slip = twin_slip(ex)
    k, steps = slip.hop, hop_lines(ex)
    wrong = [f"{hop_path(ex, k + j)}: {s}" for j, s in enumerate(slip.wrong)]
    if repaired:
        lines = [*steps[:k], wrong[0], slip.repair_line(), *steps[k:], answer_line(ex)]
        return format_target("\n".join(lines), ex.answer)
    return format_target("\n".join([*steps[:k], *wrong, answer_line(ex, slip.answer)]), slip.answer)


def test_a_caught_slip_and_an_uncaught_one_are_told_apart():
    ex = with_slip(3)
    caught = trace_behaviour(slipped_trace(ex, repaired=True), ex)
    missed = trace_behaviour(slipped_trace(ex, repaired=False), ex)
    clean = trace_behaviour("\n".join(clean_lines(ex)), ex)
    assert caught == {**caught, "twin": True, "slipped": True, "caught": True}
    assert missed == {**missed, "twin": True, "slipped": True, "caught": False}
    assert clean == {**clean, "twin": True, "slipped": False, "caught": False}


def test_verification_counts_only_when_it_quotes_a_link_of_the_gold_chain():
    ex = with_slip(2)
    real = "\n".join([*clean_lines(ex), f"Check: {ex.hops[0].evidence} So no mistake."])
    empty = "\n".join([*clean_lines(ex), f"Check: no mistake, {ex.answer} fits."])
    assert trace_behaviour(real, ex)["real_link"] and trace_behaviour(real, ex)["verifies"]
    assert not trace_behaviour(empty, ex)["real_link"] and trace_behaviour(empty, ex)["verifies"]
    # a slip caught by the verification line (not a repair line) counts as caught
    slip = twin_slip(ex)
    late = slipped_trace(ex, repaired=False) + f"\nCheck: {ex.hops[slip.hop].evidence}"
    assert trace_behaviour(late, ex)["caught"]


def test_round_rates_over_rows():
    ex = with_slip(3)

    def row(text: str, correct: float) -> dict:
        return {"behaviour": behaviour_column(text, ex), "correct": correct}

    rows = [
        row(slipped_trace(ex, repaired=True), 1.0),
        row(slipped_trace(ex, repaired=False), 0.0),
        row("\n".join([*clean_lines(ex), f"Check: {ex.hops[0].evidence}"]), 1.0),
        row("\n".join(clean_lines(ex)), 1.0),
    ]
    m = behaviour_metrics(rows, "eval")
    assert m["eval/slips"] == 2 and m["eval/slip_rate"] == 0.5
    assert m["eval/slips_caught"] == 0.5 and m["eval/slips_repaired"] == 0.5
    assert m["eval/verify_rate"] == 0.25 and m["eval/verify_real_link"] == 1.0


def test_real_benchmarks_have_no_behaviour_column_content():
    ex = Example(id="h", question="Who?", documents=[("A", "A is B.")], answer="B", source="hotpotqa")
    assert behaviour_column("We check A.", ex) == "{}"
    assert behaviour_metrics([{"behaviour": "{}", "correct": 1.0}], "eval") == {}
    assert json.loads(behaviour_column("x", with_slip(2)))["twin"] is True
