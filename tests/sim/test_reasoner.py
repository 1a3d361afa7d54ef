"""The simulated unregulated reasoner: its behaviours look as intended and occur at config rates."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mbt_online.config import BootstrapConfig, WorldConfig
from mbt_online.scoring.metrics import diagnose, extract_answer, split_trace
from mbt_online.sim.reasoner import LOOP_CUE, draw_kind, unregulated_trace
from mbt_online.tasks.world import generate_world, hop_line, make_examples

CFG = WorldConfig(entities_per_kind=20, distractors=3)
EXAMPLES = make_examples(generate_world(11, CFG), 60, 0, CFG)


def traces_of(kind: str, n: int = 12) -> list[tuple]:
    rates = BootstrapConfig(
        p_loop=float(kind == "loop"),
        p_distractor_switch=float(kind == "distractor_switch"),
        p_overthink=float(kind == "overthink"),
    )
    rng = random.Random(0)
    return [(ex, *unregulated_trace(ex, rng, rates)) for ex in EXAMPLES[:n]]


def test_clean_traces_follow_every_hop_and_answer_right():
    for ex, text, kind in traces_of("clean"):
        assert kind == "clean"
        assert extract_answer(text) == ex.answer
        for hop in ex.hops:
            assert hop_line(hop) in text
        assert text.startswith("<think>\n") and text.endswith(f"<answer>{ex.answer}</answer>")


def test_overthinking_is_right_but_longer():
    clean = {ex.id: len(t.split()) for ex, t, _ in traces_of("clean")}
    for ex, text, kind in traces_of("overthink"):
        assert kind == "overthink"
        assert extract_answer(text) == ex.answer
        assert len(text.split()) > clean[ex.id] + 5
        assert "double-check" in text


def test_distractor_switch_is_an_answer_inclusive_error():
    for ex, text, kind in traces_of("distractor_switch"):
        assert kind == "distractor_switch"
        final = extract_answer(text)
        assert final != ex.answer
        # the wrong answer comes from an off-chain document's look-alike sentence
        off_chain = " ".join(x for t, x in ex.documents if t not in ex.supporting_titles)
        assert final in off_chain
        d = diagnose(text, "stop", len(text.split()), ex.answers, budget=200)
        assert d.reached and d.answer_inclusive_error and d.correct == 0.0


def test_loops_never_close_and_run_long():
    for ex, text, kind in traces_of("loop"):
        assert kind == "loop"
        assert "</think>" not in text and extract_answer(text) is None
        assert len(text.split()) >= 400
        assert text.count(LOOP_CUE) >= 3
        d = diagnose(text, "length", 320, ex.answers, budget=200)
        assert d.truncated and d.repetition > 0.5


def test_some_loops_stop_before_reaching_the_answer():
    reached = [ex.answer in split_trace(t) for ex, t, _ in traces_of("loop", n=60)]
    assert 0.25 < sum(reached) / len(reached) < 0.95


@pytest.mark.parametrize(
    "rates", [(0.3, 0.25, 0.15), (0.1, 0.5, 0.0), (0.0, 0.0, 0.0), (0.5, 0.2, 0.3)]
)
def test_behaviour_rates_match_config(rates):
    p_loop, p_switch, p_over = rates
    cfg = BootstrapConfig(p_loop=p_loop, p_distractor_switch=p_switch, p_overthink=p_over)
    rng = random.Random(1)
    n = 3000
    kinds = Counter(
        unregulated_trace(EXAMPLES[i % 60], rng, cfg, loop_words=20)[1] for i in range(n)
    )
    expected = {
        "loop": p_loop,
        "distractor_switch": p_switch,
        "overthink": p_over,
        "clean": 1 - p_loop - p_switch - p_over,
    }
    for kind, p in expected.items():
        tol = 4 * (p * (1 - p) / n) ** 0.5 + 1e-9
        assert abs(kinds[kind] / n - p) <= tol, (kind, kinds[kind] / n, p)


def test_draw_kind_is_seeded():
    cfg = BootstrapConfig()
    a = [draw_kind(random.Random(5), cfg) for _ in range(3)]
    b = [draw_kind(random.Random(5), cfg) for _ in range(3)]
    assert a == b


def test_rates_over_one_are_rejected():
    with pytest.raises(ValueError, match="must be <= 1"):
        BootstrapConfig(p_loop=0.5, p_distractor_switch=0.4, p_overthink=0.2)


def test_hop_slips_follow_the_look_alike_chain_or_repair_themselves():
    from twin_world import with_slip

    from mbt_online.scoring.behaviour import trace_behaviour
    from mbt_online.tasks.world import twin_slip

    class SlipRates:
        p_loop = p_distractor_switch = p_overthink = 0.0
        p_hop_slip, p_slip_repair = 1.0, 0.5

    ex = with_slip(3)
    slip = twin_slip(ex)
    rng = random.Random(3)
    drawn = [unregulated_trace(ex, rng, SlipRates()) for _ in range(40)]
    assert {kind for _, kind in drawn} == {"hop_slip"}
    repaired = [t for t, _ in drawn if slip.repair_line() in t]
    missed = [t for t, _ in drawn if slip.repair_line() not in t]
    assert 10 <= len(repaired) <= 30 and missed
    for text in repaired:
        assert text.endswith(f"<answer>{ex.answer}</answer>")
        assert trace_behaviour(text, ex) | {"slipped": True, "caught": True} == trace_behaviour(
            text, ex
        )
    for text in missed:
        assert text.endswith(f"<answer>{slip.answer}</answer>")
        assert all(w in text for w in slip.wrong)
        assert not trace_behaviour(text, ex)["caught"]
