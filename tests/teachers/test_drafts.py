"""MBT-R's reading of a draft, on the hand-made three-hop chain: its answer, its loops, its slip,
the findings it keeps and the correction it gets."""

from __future__ import annotations

import random

import pytest
from teacher_cases import chain_example

from mbt_online.teachers.chain import gold_steps
from mbt_online.teachers.drafts import (
    Slip,
    content,
    correction,
    dedupe,
    draft_facts,
    draft_slip,
    find_slip,
    restates,
    slip_step,
    split_draft,
)

EX = chain_example()  # Orla Venn -> Harrowgate -> Keld -> Marrow Cross; 4, 5 are look-alikes
STEPS = gold_steps(EX)


def test_the_chain_these_tests_rely_on():
    assert [(s.answer, s.doc) for s in STEPS] == [
        ("Harrowgate", 1),
        ("Keld", 2),
        ("Marrow Cross", 3),
    ]


@pytest.mark.parametrize(
    ("draft", "body", "final"),
    [
        (
            "<think>\nHarrowgate is in Keld.\n</think>\n\n<answer> Marrow Cross </answer>",
            "Harrowgate is in Keld.",
            "Marrow Cross",
        ),
        # no answer tag: the last "answer is" of the reasoning
        (
            "The answer is Keld. No wait, the answer is: Marrow Cross. Done.",
            "The answer is Keld. No wait, the answer is: Marrow Cross. Done.",
            "Marrow Cross",
        ),
        ("<think>I am lost</think>", "I am lost", ""),
        ("", "", ""),
        (None, "", ""),
    ],
)
def test_split_draft(draft, body, final):
    assert split_draft(draft) == (body, final)


def test_split_draft_drops_stray_tags_from_the_body():
    body, final = split_draft("Keld. </answer> So <think> Marrow Cross.")
    assert "<" not in body and final == ""


def test_content_words_skip_stop_words_and_short_words():
    assert content("The capital of Keld is in it, as we saw") == {"capital", "keld", "saw"}
    assert content("it is a") == set()


def test_dedupe_drops_repeats_and_near_repeats_and_counts_them():
    kept, dropped = dedupe(
        [
            "Orla Venn was born in Harrowgate.",
            "Orla Venn was born in Harrowgate!",  # the same content words
            "So Orla Venn was born in Harrowgate.",  # "so" is a stop word
            "Harrowgate lies in Keld.",
            "Hmm.",
            "hmm",  # no content words: compared as normalised text
            "Keld's capital is Marrow Cross.",
        ]
    )
    assert kept == [
        "Orla Venn was born in Harrowgate.",
        "Harrowgate lies in Keld.",
        "Hmm.",
        "Keld's capital is Marrow Cross.",
    ]
    assert dropped == 3


def test_dedupe_keeps_sentences_that_add_a_fifth_of_new_words():
    kept, dropped = dedupe(["Orla Venn painter born Harrowgate", "Orla Venn painter born Keld"])
    assert dropped == 0 and len(kept) == 2


def test_restates():
    assert restates({"a", "b", "c"}, {"a", "b", "x"})  # 2 of 3 said before
    assert not restates({"a", "b", "c"}, {"a"})
    assert not restates(set(), {"a"})


def test_a_wrong_final_answer_is_the_slip_traced_to_the_document_naming_it():
    slip = find_slip(EX, STEPS, ["Orla Venn was born in Harrowgate."], "Dunmere")
    assert slip == Slip("answer", "Dunmere", 4)  # "Orla Venning ... was born in Dunmere."
    nowhere = find_slip(EX, STEPS, [], "Paris")
    assert nowhere == Slip("answer", "Paris", 0)


@pytest.mark.parametrize("final", ["Marrow Cross", "marrow cross", "the Marrow Cross", ""])
def test_the_gold_answer_or_no_answer_is_no_answer_slip(final: str):
    assert find_slip(EX, STEPS, ["Orla Venn was born in Harrowgate."], final) is None


@pytest.mark.parametrize("final", ["unknown", "I don't know", "not sure"])
def test_an_answer_that_commits_to_nothing_is_no_slip(final: str):
    assert find_slip(EX, STEPS, [], final) is None


def test_a_followed_distractor_is_an_entity_slip_naming_the_sentence():
    sentence = "Orla Venning was born in Dunmere."
    slip = find_slip(EX, STEPS, ["Orla Venn is a painter.", sentence], "Marrow Cross")
    assert slip == Slip("entity", "Orla Venning", 4, sentence)


def test_a_distractor_set_aside_or_named_beside_the_chain_is_no_slip():
    for sentence in (
        "Orla Venning is not relevant here.",
        "We ignore Dunmere.",
        "Orla Venning and Orla Venn are two people.",  # names the chain's own entity too
    ):
        assert find_slip(EX, STEPS, [sentence], "Marrow Cross") is None, sentence


def test_slip_step():
    assert slip_step(STEPS, Slip("answer", "Dunmere", 4)) == 2  # the final step
    entity = Slip("entity", "Orla Venning", 4, "Orla Venning was born in the town of Dunmere.")
    assert slip_step(STEPS, entity) == 0  # shares "born", "town" with step 1's evidence


def test_draft_facts_keep_supported_findings_by_step_in_our_voice():
    sentences = [
        "I think Orla Venn was born in Harrowgate.",  # doubt: dropped
        "I found that Harrowgate lies in the province of Keld.",
        "Harrowgate lies in the province of Keld indeed.",  # a restatement
        "The capital of the province of Keld is Marrow Cross.",
        "Keld is a province whose capital is Marrow Cross.",  # after the answer: dropped
    ]
    facts = draft_facts(EX, STEPS, sentences, None)
    assert facts == {
        1: ["We found that Harrowgate lies in the province of Keld."],
        2: ["The capital of the province of Keld is Marrow Cross."],
    }


def test_draft_facts_drop_the_slip_and_unsupported_sentences():
    slip = Slip("entity", "Orla Venning", 4, "")
    sentences = [
        "Orla Venning was born in the town of Harrowgate.",  # names the slip
        "Pirates sail across wide oceans every single summer.",  # no support
        "Harrowgate lies in the province of Keld.",
    ]
    assert draft_facts(EX, STEPS, sentences, slip) == {
        1: ["Harrowgate lies in the province of Keld."]
    }


def test_my_and_me_become_our_and_us():
    facts = draft_facts(EX, STEPS, ["By my reading Harrowgate lies in the province of Keld."], None)
    assert facts == {1: ["By our reading Harrowgate lies in the province of Keld."]}


@pytest.mark.xfail(
    strict=True,
    reason="drafts._I_SUBJECT matches clause words case-sensitively: a sentence opening "
    "'So I' / 'But I' / 'Then I' keeps its 'I' (beside a rewritten 'our')",
)
def test_a_sentence_opening_with_a_clause_word_also_speaks_as_we():
    facts = draft_facts(EX, STEPS, ["So I found Harrowgate lies in the province of Keld."], None)
    assert facts == {1: ["So we found Harrowgate lies in the province of Keld."]}


def test_an_entity_correction_names_the_distractor_and_quotes_the_right_document():
    slip = Slip("entity", "Orla Venning", 4, "Orla Venning was born in Dunmere.")
    text = correction(EX, STEPS, slip, random.Random(0), 0)
    assert "Orla Venning" in text and "Document [4] (Title: Orla Venning)" in text
    assert "Document [1] (Title: Orla Venn)" in text
    assert '"She was born in the town of Harrowgate."' in text


def test_an_answer_correction_leads_from_the_wrong_answer_to_the_gold():
    for seed in range(6):
        text = correction(EX, STEPS, Slip("answer", "Dunmere", 5), random.Random(seed), 0)
        outside_quote = text.split('"')[0] + text.split('"')[-1]
        assert text.startswith(
            ("We were about to settle on Dunmere", "Our first inclination", "Something")
        )
        assert "Marrow Cross" in outside_quote  # the gold is named, not only quoted
        assert "Document [3] (Title: Keld)" in text
        assert "Document [5] (Title: Dunmere)" in text  # where the wrong name came from
    sourceless = correction(EX, STEPS, Slip("answer", "Paris", 0), random.Random(0), 0)
    assert "Document [" in sourceless and "distractor" not in sourceless


def test_a_terse_correction_quotes_at_most_twelve_words():
    long = EX.documents[2][1] + " " + " ".join(["It is known for rivers and hills"] * 5)
    ex = chain_example()
    ex.documents[2] = ("Keld", long)
    steps = gold_steps(ex)
    text = correction(ex, steps, Slip("answer", "Dunmere", 0), random.Random(0), 2)
    quoted = text.split('"')[1]
    assert len(quoted.replace("...", "").split()) <= 12


def test_draft_slip():
    assert draft_slip(EX, STEPS, None) is None  # MBT-S: no draft
    assert draft_slip(EX, STEPS, "<answer>Marrow Cross</answer>") is None
    assert draft_slip(EX, STEPS, "<think>Hmm.</think><answer>Dunmere</answer>") == Slip(
        "answer", "Dunmere", 4
    )
    followed = "<think>Orla Venning was born in Dunmere.</think><answer>Marrow Cross</answer>"
    assert draft_slip(EX, STEPS, followed).kind == "entity"
