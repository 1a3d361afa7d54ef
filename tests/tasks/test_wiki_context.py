"""The HotpotQA / 2Wiki layout parser on hand-made rows: the official lists, the hub's structs,
and each way a row can be malformed."""

from __future__ import annotations

import copy

import pytest

from mbt_online.tasks.base import MalformedRow
from mbt_online.tasks.wiki_context import parse_context_row

SEEN: list[tuple[str, int]] = []


def tier(kind: str, facts: int) -> str:
    """Records what the parser passes the benchmark's rule."""
    SEEN.append((kind, facts))
    return f"{kind}-{facts}"


def official() -> dict:
    """The official-file layout: lists of [title, sentences] and [title, sentence id]; HotpotQA
    keeps a leading space on sentences after the first."""
    return {
        "_id": "q1",
        "question": "  Where was the director of Blue Harbour born? ",
        "answer": "Harrowgate",
        "type": "bridge",
        "context": [
            ["Blue Harbour", ["Blue Harbour is a 1990 film.", " It was directed by Orla Venn."]],
            ["Orla Venn", ["Orla Venn is a director.", " She was born in Harrowgate.", ""]],
            ["Dunmere", ["Dunmere is a town."]],
        ],
        "supporting_facts": [["Blue Harbour", 1], ["Orla Venn", 1]],
    }


def hub() -> dict:
    """The hub layout of the same row: structs of parallel lists, `id` and other key names."""
    return {
        "id": "q1",
        "question": "Where was the director of Blue Harbour born?",
        "answer": "Harrowgate",
        "type": "bridge",
        "context": {
            "title": ["Blue Harbour", "Orla Venn", "Dunmere"],
            "sentences": [
                ["Blue Harbour is a 1990 film.", "It was directed by Orla Venn."],
                ["Orla Venn is a director.", "She was born in Harrowgate.", ""],
                ["Dunmere is a town."],
            ],
        },
        "supporting_facts": {"title": ["Blue Harbour", "Orla Venn"], "sent_id": [1, 1]},
    }


def test_official_row_becomes_an_example():
    SEEN.clear()
    ex = parse_context_row(official(), "hotpotqa", tier)
    assert ex.id == "q1" and ex.source == "hotpotqa" and ex.type == "bridge"
    assert ex.question == "Where was the director of Blue Harbour born?"  # stripped
    assert ex.answer == "Harrowgate" and ex.aliases == [] and ex.hops == []
    # sentences stripped and joined by single spaces; the empty one leaves no gap
    assert ex.documents == [
        ("Blue Harbour", "Blue Harbour is a 1990 film. It was directed by Orla Venn."),
        ("Orla Venn", "Orla Venn is a director. She was born in Harrowgate."),
        ("Dunmere", "Dunmere is a town."),
    ]
    assert ex.supporting_titles == ["Blue Harbour", "Orla Venn"]
    assert ex.supporting_sentences == [
        ("Blue Harbour", "It was directed by Orla Venn."),
        ("Orla Venn", "She was born in Harrowgate."),
    ]
    assert SEEN == [("bridge", 2)] and ex.tier == "bridge-2"


def test_hub_structs_give_the_same_example():
    assert parse_context_row(hub(), "hotpotqa", tier) == parse_context_row(
        official(), "hotpotqa", tier
    )


def test_other_key_names_and_record_dicts():
    """2Wiki hub copies say `content`, some copies `sentence_id`; records may be dicts."""
    row = official()
    row["context"] = [
        {"title": "Orla Venn", "content": ["Orla Venn is a director.", "Born in Harrowgate."]},
        {"title": "Keld", "text": "Keld is a province."},  # one string: one sentence
    ]
    row["supporting_facts"] = [
        {"title": "Orla Venn", "sentence_id": 1},
        {"title": "Keld", "sent_idx": 0},
        {"title": "Orla Venn", "sent_id": 1},  # a repeated fact: one supporting title
    ]
    ex = parse_context_row(row, "2wikimultihopqa", tier)
    assert ex.documents[1] == ("Keld", "Keld is a province.")
    assert ex.supporting_titles == ["Orla Venn", "Keld"]
    assert ex.supporting_sentences[:2] == [
        ("Orla Venn", "Born in Harrowgate."),
        ("Keld", "Keld is a province."),
    ]
    assert ex.tier == "bridge-3"  # the rule sees every fact, repeats included


def test_a_repeated_title_resolves_facts_in_its_first_document():
    row = official()
    row["context"].append(["Orla Venn", ["Another Orla Venn.", "A second text."]])
    ex = parse_context_row(row, "hotpotqa", tier)
    assert ex.supporting_sentences[1] == ("Orla Venn", "She was born in Harrowgate.")
    assert len(ex.documents) == 4  # the document itself is kept


def test_aliases_and_a_missing_type():
    row = {**official(), "answer_aliases": ["Harrowgate", "Harrowgate town", "H."]}
    del row["type"]
    SEEN.clear()
    ex = parse_context_row(row, "hotpotqa", tier)
    assert ex.aliases == ["Harrowgate town", "H."] and ex.type == ""
    assert ex.answers == ["Harrowgate", "Harrowgate town", "H."]
    assert SEEN == [("", 2)]


def test_numbers_are_read_as_text():
    row = {**official(), "_id": 17, "answer": 1990}
    ex = parse_context_row(row, "hotpotqa", tier)
    assert ex.id == "17" and ex.answer == "1990"


def broken(change) -> dict:
    row = copy.deepcopy(official())
    change(row)
    return row


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (broken(lambda r: r.pop("_id")), "missing_id"),
        (broken(lambda r: r.update(_id=1.5)), "bad_id"),
        (broken(lambda r: r.update(question="  ")), "missing_question"),
        (broken(lambda r: r.pop("answer")), "missing_answer"),
        (broken(lambda r: r.pop("context")), "missing_context"),
        (broken(lambda r: r.update(context=[["A", ["", " "]]])), "empty_documents"),
        (broken(lambda r: r.update(context=[["A"]])), "bad_layout"),
        (broken(lambda r: r.update(context=[["A", 5]])), "bad_layout"),
        (broken(lambda r: r.update(context=[[["A"], ["x."]]])), "bad_title"),
        (broken(lambda r: r.update(context=[["A", ["x.", {"s": 1}]]])), "bad_sentences"),
        (broken(lambda r: r.update(supporting_facts=[])), "missing_supporting_facts"),
        (broken(lambda r: r.pop("supporting_facts")), "missing_supporting_facts"),
        (broken(lambda r: r.update(supporting_facts=[["Nowhere", 0]])), "missing_supporting_title"),
        (broken(lambda r: r.update(supporting_facts=[["Orla Venn", 3]])), "bad_sentence_id"),
        (broken(lambda r: r.update(supporting_facts=[["Orla Venn", -1]])), "bad_sentence_id"),
        (broken(lambda r: r.update(supporting_facts=[["Orla Venn", 2]])), "bad_sentence_id"),
        (broken(lambda r: r.update(supporting_facts=[["Orla Venn", True]])), "bad_sentence_id"),
        (broken(lambda r: r.update(supporting_facts=[["Orla Venn", "1"]])), "bad_sentence_id"),
        (broken(lambda r: r.update(type=["bridge"])), "bad_type"),
    ],
)
def test_malformed_rows_name_their_reason(row: dict, reason: str):
    with pytest.raises(MalformedRow) as err:
        parse_context_row(row, "hotpotqa", tier)
    assert err.value.reason == reason


def test_a_bad_sentence_id_names_the_fact():
    """`Orla Venn[2]` is the empty sentence: an id must point at a sentence with text."""
    row = broken(lambda r: r.update(supporting_facts=[["Orla Venn", 2]]))
    with pytest.raises(MalformedRow, match=r"bad_sentence_id: Orla Venn\[2\]"):
        parse_context_row(row, "hotpotqa", tier)
    huge = broken(lambda r: r.update(supporting_facts=[["Orla Venn", 10**12]]))
    with pytest.raises(MalformedRow, match=r"bad_sentence_id: Orla Venn\[int\]"):
        parse_context_row(huge, "hotpotqa", tier)
