"""Hand-checked values for answer scoring, trace heuristics, AES / MQI and aggregation."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from mbt_online.scoring.metrics import (
    PHASES,
    RRP,
    aes,
    aggregate,
    contains_answer,
    cover_match,
    detect_phases,
    diagnose,
    exact_match,
    extract_answer,
    f1_score,
    first_reach,
    mqi,
    mqi_level,
    repetition_ratio,
    rrp_heuristic,
    split_trace,
)

# Five sentences: the gold (Tacoma) is reached in sentence 3, then vague doubt and a restatement.
DUNE = (
    "The question asks where the author of Dune was born. "
    "Document 2 says Frank Herbert wrote Dune. "
    "Document 4 says Frank Herbert was born in Tacoma. "
    "Wait, let me think again. "
    "Frank Herbert was born in Tacoma."
)

# ------------------------------------------------------------------ extraction


def test_extract_answer_last_tag_wins_and_is_stripped():
    assert extract_answer("<answer>Lyon</answer> no, <answer>  Paris \n</answer>") == "Paris"
    assert extract_answer("Put it in <answer></answer>. <answer>Paris</answer>") == "Paris"
    assert extract_answer("<ANSWER>Paris</Answer>") == "Paris"


def test_extract_answer_missing_or_unclosed_is_none():
    assert extract_answer("") is None
    assert extract_answer("the answer is Paris") is None
    assert extract_answer("<answer>Paris") is None
    # the last opening tag decides: an earlier complete answer does not rescue an unclosed final one
    assert extract_answer("<answer>Lyon</answer> then <answer>Par") is None


def test_split_trace_variants():
    assert split_trace("<think>\nreason here\n</think>\n\n<answer>x</answer>") == "reason here"
    assert split_trace("<think>runs to the cap") == "runs to the cap"
    # template opened the think block in the prompt: only the closing tag is generated
    assert split_trace("reason here</think><answer>x</answer>") == "reason here"
    assert split_trace("r1 <answer>a</answer> r2 <answer>b</answer>") == "r1 <answer>a</answer> r2"
    assert split_trace("no tags at all") == "no tags at all"
    assert split_trace("") == ""


# ------------------------------------------------------------------ SQuAD scores


def test_exact_match():
    assert exact_match("The Beatles.", ["beatles"]) == 1.0
    assert exact_match("Beatles band", ["beatles"]) == 0.0
    assert exact_match("NYC", ["New York City", "NYC"]) == 1.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("x", []) == 0.0


def test_f1_by_hand():
    # pred tokens [eiffel, tower, in, paris], gold [eiffel, tower]: P = 2/4, R = 2/2 -> F1 = 2/3
    assert f1_score("the Eiffel Tower in Paris", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    # against "Paris, France": common 1, P = 1/4, R = 1/2 -> F1 = 1/3; best over golds is 2/3
    assert f1_score("the Eiffel Tower in Paris", ["Paris, France"]) == pytest.approx(1 / 3)
    assert f1_score(
        "the Eiffel Tower in Paris", ["Paris, France", "Eiffel Tower"]
    ) == pytest.approx(2 / 3)
    # repeated tokens count once per occurrence in both: P = 2/4, R = 1 -> 2/3
    assert f1_score("new york new york", ["New York"]) == pytest.approx(2 / 3)
    assert f1_score("Lyon", ["Paris"]) == 0.0
    assert f1_score(None, ["Paris"]) == 0.0
    assert f1_score("Paris", []) == 0.0


def test_cover_match():
    assert cover_match("It was Frank Herbert.", ["Herbert"]) == 1.0
    assert cover_match("Herbert", ["Frank Herbert"]) == 0.0
    # whole words only: the paper's plain substring would count these
    assert cover_match("1990", ["19"]) == 0.0
    assert cover_match("Patric Knowles", ["no"]) == 0.0
    assert cover_match("Freakonomics", ["no", "No."]) == 0.0
    assert cover_match("No, it is not.", ["no"]) == 1.0
    assert cover_match("Stephen King's novel", ["Stephen King"]) == 1.0  # "King's" reads "king s"
    assert cover_match("anything", ["The"]) == 0.0  # empty normalised gold never matches
    assert cover_match(None, ["Paris"]) == 0.0


# ------------------------------------------------------------------ repetition


def test_repetition_ratio_by_hand():
    # 4-grams of "a b c d a b c d": abcd bcda cdab dabc abcd -> 1 repeat of 5
    assert repetition_ratio("a b c d a b c d") == pytest.approx(1 / 5)
    # looping trace, trigrams: xyz yzx zxy xyz yzx zxy xyz -> 4 repeats of 7
    assert repetition_ratio("x y z x y z x y z", n=3) == pytest.approx(4 / 7)
    # bigrams: so-the the-answer answer-so so-the the-answer -> 2 repeats of 5 (case, punctuation
    # ignored)
    assert repetition_ratio("So. The answer. So, the ANSWER", n=2) == pytest.approx(2 / 5)
    assert repetition_ratio("all words differ here", n=2) == 0.0
    assert repetition_ratio("too short", n=4) == 0.0
    assert repetition_ratio("") == 0.0


def test_repetition_ratio_of_a_loop_approaches_one():
    loop = "I need to check the year again. " * 50
    assert repetition_ratio(loop) > 0.95


# ------------------------------------------------------------------ answer reach


def test_contains_answer_is_word_boundary_aware():
    assert contains_answer("He lived 1990-1995 there.", ["1990"])
    assert not contains_answer("In 19901 things happened.", ["1990"])
    assert not contains_answer("The year 1990.", ["1"])
    assert contains_answer("Tolkien's book", ["Tolkien"])
    assert contains_answer("jay-z released it", ["Jay Z"])
    assert contains_answer("born in the United States", ["The United States"])
    assert not contains_answer("anything", [])
    assert not contains_answer("anything", ["the"])


def test_contains_answer_yes_no_needs_a_stated_answer():
    assert not contains_answer("No, that's wrong. There is no date.", ["no"])
    assert contains_answer("So the answer is: No.", ["no"])
    assert contains_answer("Both are Americans, so the answer would be yes", ["yes"])
    assert not contains_answer("Yes, document 1 says so.", ["yes"])


def test_first_reach():
    assert first_reach(DUNE, ["Tacoma"]) == 2
    assert first_reach(DUNE, ["Frank Herbert", "Tacoma"]) == 1
    assert first_reach(DUNE, ["Seattle"]) is None
    assert first_reach("", ["Tacoma"]) is None
    # an answer cut by a mistaken boundary counts at the sentence where it ends
    assert first_reach("Intro here. He went to St. Louis, Missouri.", ["St Louis"]) == 1


# ------------------------------------------------------------------ RRP


def test_rrp_on_a_five_sentence_trace():
    # reach: sentence index 2 -> rho = 3/5; sentence 4 is doubt filler and sentence 5 restates
    # (frank, herbert, born, tacoma all seen) -> delta = 2/5; score = 2*0.4*0.6/(0.4+0.6) = 0.48
    r = rrp_heuristic(DUNE, ["Tacoma"])
    assert r.reached
    assert r.reach == pytest.approx(0.6)
    assert r.redundancy == pytest.approx(0.4)
    assert r.score == pytest.approx(0.48)


def test_rrp_concrete_verification_is_not_redundant():
    # a check against a document replaces the restatement: delta = 1/5, score = 2*.4*.8/1.2 = 8/15
    trace = DUNE.replace(
        "Frank Herbert was born in Tacoma.", "Checking Document 4 confirms Tacoma."
    )
    r = rrp_heuristic(trace, ["Tacoma"])
    assert r.redundancy == pytest.approx(0.2)
    assert r.score == pytest.approx(8 / 15)


def test_rrp_keeps_at_most_two_audits_after_the_answer():
    trace = DUNE.replace("Wait, let me think again. Frank Herbert was born in Tacoma.", "") + (
        "Checking Document 4 confirms Tacoma. "
        "Document 2 also matches Frank Herbert. "
        "Let me verify with Document 4 that Tacoma is right."  # third audit: circling
    )
    r = rrp_heuristic(trace, ["Tacoma"])
    # six sentences, reach at index 2 -> rho = 1/2; only the third audit is redundant -> 1/6
    assert r.reach == pytest.approx(0.5)
    assert r.redundancy == pytest.approx(1 / 6)
    assert r.score == pytest.approx(2 * 0.5 * (5 / 6) / (0.5 + 5 / 6))


def test_rrp_new_alternative_is_not_redundant_but_repeats_are():
    trace = (
        "Document 1 says Paris. Could it instead be Lyon, as document 3 hints? "
        "Document 1 says Paris."
    )
    r = rrp_heuristic(trace, ["Paris"])
    # rho = 1/3; sentence 2 names new content (lyon, instead, hints); sentence 3 is a repeat
    assert r.reach == pytest.approx(1 / 3)
    assert r.redundancy == pytest.approx(1 / 3)
    assert r.score == pytest.approx(2 / 3)


def test_rrp_restatement_threshold_is_60_percent_of_content_words():
    trace = (
        "Frank Herbert was born in Tacoma. "  # reach; content: frank herbert born tacoma
        "Herbert was born in Tacoma near Puget. "  # 3 of 5 content words seen: redundant
        "Herbert later moved to Seattle. "  # 1 of 4 seen: new fact
        "Frank Herbert wrote novels."  # 2 of 4 seen: below 60%, new fact
    )
    r = rrp_heuristic(trace, ["Tacoma"])
    assert r.reach == pytest.approx(1 / 4)
    assert r.redundancy == pytest.approx(1 / 4)
    assert r.score == pytest.approx(0.75)


def test_rrp_never_reached_or_empty():
    assert rrp_heuristic(DUNE, ["Seattle"]) == RRP(
        reach=1.0, redundancy=0.0, score=0.0, reached=False
    )
    assert rrp_heuristic("", ["Tacoma"]) == RRP(reach=1.0, redundancy=0.0, score=0.0, reached=False)
    # reached only in the last sentence: 1 - rho = 0, so the score is 0
    last = rrp_heuristic("Doc 1 is about a city. It is Tacoma.", ["Tacoma"])
    assert last.reached and last.reach == 1.0 and last.score == 0.0


# ------------------------------------------------------------------ MQI, AES


@pytest.mark.parametrize(
    ("phases", "level"),
    [
        ([], 0),
        (["execution"], 1),
        (["understanding"], 1),
        (["planning"], 2),
        (["execution", "verification"], 2),
        (["understanding", "execution", "self_correction"], 2),
        (["planning", "execution"], 3),
        (["understanding", "planning", "execution"], 3),
        (["understanding", "planning", "execution", "verification"], 4),
        (["understanding", "execution", "self_correction", "verification"], 4),
        (list(PHASES), 5),
        (["execution", "execution", "bogus"], 1),
    ],
)
def test_mqi_level(phases, level):
    assert mqi_level(phases) == level


def test_detect_phases_on_a_structured_trace_gives_level_5():
    trace = (
        "The question asks where the author of Dune was born; document 3 is a distractor. "
        "Plan: find the author, then the birthplace. Document 2 says Frank Herbert wrote Dune. "
        "Wait, I misread: document 4 is about his son. Let me verify: Tacoma matches the question."
    )
    assert detect_phases(trace) == list(PHASES)
    assert mqi_level(detect_phases(trace)) == 5
    assert detect_phases("Paris.") == []


def test_mqi_is_length_aware():
    assert mqi(3, base_mean_tokens=1000, mean_tokens=500) == pytest.approx(6.0)
    assert mqi(4, base_mean_tokens=731, mean_tokens=731) == pytest.approx(4.0)
    assert mqi(5, base_mean_tokens=1000, mean_tokens=0) == 0.0


def test_aes_both_branches_with_1_3_5():
    # dL = (1000 - 500)/1000 = 0.5; dA = (0.6 - 0.5)/0.5 = 0.2 -> 0.5 + 3*0.2 = 1.1
    assert aes(0.6, 500, 0.5, 1000) == pytest.approx(1.1)
    # dA = (0.4 - 0.5)/0.5 = -0.2 -> 0.5 - 5*0.2 = -0.5
    assert aes(0.4, 500, 0.5, 1000) == pytest.approx(-0.5)
    # longer and equally accurate: dL = (1000 - 1500)/1000 = -0.5, dA = 0
    assert aes(0.5, 1500, 0.5, 1000) == pytest.approx(-0.5)
    # custom constants: 2*0.5 + 1*0.2
    assert aes(0.6, 500, 0.5, 1000, a=2.0, b=1.0, c=10.0) == pytest.approx(1.2)


def test_aes_zero_bases():
    # base accuracy 0: dA falls back to the absolute change 0.3 -> 0.5 + 3*0.3 = 1.4
    assert aes(0.3, 500, 0.0, 1000) == pytest.approx(1.4)
    assert aes(0.0, 500, 0.0, 1000) == pytest.approx(0.5)
    # base produced no tokens: the length term is neutral; dA = (0.6-0.5)/0.5 = 0.2 -> 0.6
    assert aes(0.6, 500, 0.5, 0) == pytest.approx(0.6)


# ------------------------------------------------------------------ diagnose / aggregate


def test_diagnose_answer_inclusive_error():
    text = f"<think>\n{DUNE}\nBut maybe it was Seattle.\n</think>\n\n<answer>Seattle</answer>"
    d = diagnose(text, "stop", 120, ["Tacoma"], budget=100)
    assert d.answer == "Seattle" and d.has_answer_tag
    assert d.correct == 0.0 and d.em == 0.0 and d.f1 == 0.0
    assert d.reached and d.answer_inclusive_error
    assert not d.truncated
    # six sentences: reach at index 2 -> 3/6; redundant: filler + restatement -> 2/6
    assert d.first_reach == pytest.approx(0.5)
    assert d.redundancy == pytest.approx(1 / 3)
    assert d.rrp == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert d.over_budget == pytest.approx(0.2)
    assert d.tokens == 120 and d.budget == 100
    assert "understanding" in d.phases and "self_correction" in d.phases


def test_diagnose_gold_only_in_final_answer_is_not_reached():
    d = diagnose("<think>Hmm.</think><answer>Tacoma</answer>", "stop", 10, ["Tacoma"], 100)
    assert d.correct == 1.0 and d.em == 1.0 and d.f1 == 1.0
    assert not d.reached and not d.answer_inclusive_error and d.first_reach is None
    assert d.over_budget == 0.0


def test_diagnose_truncated_loop():
    loop = "<think>" + "Let me check document 2 again. " * 40
    d = diagnose(loop, "length", 512, ["Tacoma"], budget=256)
    assert d.truncated and d.answer is None and not d.has_answer_tag
    assert d.correct == 0.0 and not d.answer_inclusive_error  # never reached: a plain miss
    assert d.repetition > 0.9
    assert d.over_budget == pytest.approx(1.0)


def test_diagnose_empty_text_and_zero_budget():
    d = diagnose("", "stop", 0, ["Tacoma"], budget=0)
    assert d.answer is None and d.correct == 0.0 and not d.has_answer_tag
    assert not d.reached and not d.answer_inclusive_error and d.first_reach is None
    assert d.repetition == 0.0 and d.redundancy == 0.0 and d.rrp == 0.0
    assert d.phases == [] and d.over_budget == 0.0
    assert asdict(d)["answer"] is None


def _diags():
    right = diagnose(f"<think>{DUNE}</think><answer>Tacoma</answer>", "stop", 100, ["Tacoma"], 200)
    inclusive = diagnose(
        f"<think>{DUNE}</think><answer>Seattle</answer>", "stop", 200, ["Tacoma"], 200
    )
    capped = diagnose("<think>loop loop loop loop loop", "length", 600, ["Tacoma"], 200)
    return [right, inclusive, capped]


def test_aggregate_by_hand():
    right, inclusive, capped = _diags()
    agg = aggregate([right, inclusive, capped], tiers=["2hop", "3hop", "3hop"])
    assert agg["n"] == 3.0
    assert agg["accuracy"] == pytest.approx(1 / 3)
    assert agg["em"] == pytest.approx(1 / 3)
    assert agg["mean_tokens"] == pytest.approx(300.0)
    assert agg["tokens_per_correct"] == pytest.approx(100.0)  # only the right trace counts
    assert agg["degeneration_rate"] == pytest.approx(1 / 3)
    assert agg["answer_inclusive_rate"] == pytest.approx(1 / 3)  # 1 of 3 traces
    assert agg["answer_inclusive_share"] == pytest.approx(1 / 2)  # 1 of 2 wrong ones
    assert agg["format_rate"] == pytest.approx(2 / 3)
    assert agg["first_reach"] == pytest.approx(0.6)  # mean over the two that reach
    assert agg["redundancy"] == pytest.approx((0.4 + 0.4 + 0.0) / 3)
    assert agg["rrp"] == pytest.approx((0.48 + 0.48 + 0.0) / 3)
    assert agg["mqi_level"] == pytest.approx((2 + 2 + 0) / 3)  # understanding+execution+s.c.
    assert agg["2hop/accuracy"] == 1.0 and agg["2hop/mean_tokens"] == 100.0
    assert agg["3hop/accuracy"] == 0.0 and agg["3hop/mean_tokens"] == 400.0


def test_aggregate_edge_cases():
    empty = aggregate([])
    assert empty["n"] == 0.0 and empty["accuracy"] == 0.0 and empty["first_reach"] == 1.0
    diags = _diags()
    assert aggregate(diags[1:])["tokens_per_correct"] == 0.0  # none correct: no NaN in the logs
    assert not any("/" in k for k in aggregate(diags))
    assert "/accuracy" not in aggregate(diags, tiers=["", "", "x"])
    with pytest.raises(ValueError, match="tiers"):
        aggregate(diags, tiers=["a"])


def test_source_metrics_split_a_mixed_evaluation_by_benchmark():
    from mbt_online.scoring.round_metrics import source_metrics

    right, inclusive, capped = _diags()
    rows = [{"source": "hotpotqa"}, {"source": "2wikimultihopqa"}, {"source": "hotpotqa"}]
    out = source_metrics(rows, [right, inclusive, capped], "eval")
    assert out["eval/hotpotqa/accuracy"] == 0.5 and out["eval/2wikimultihopqa/accuracy"] == 0.0
    assert out["eval/hotpotqa/tokens_per_correct"] == 100.0
    assert out["eval/hotpotqa/degeneration_rate"] == 0.5
    assert out["eval/2wikimultihopqa/answer_inclusive_rate"] == 1.0
    assert out["eval/hotpotqa/mean_tokens"] == 350.0
    one = [{"source": "hotpotqa"}] * 3  # a single benchmark: the pooled numbers say it all
    assert source_metrics(one, [right, inclusive, capped], "eval") == {}
