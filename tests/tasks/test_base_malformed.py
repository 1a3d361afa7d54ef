"""Loaders on hostile data files: every malformed row is a counted skip with its reason, and a file
the readers cannot walk at all is a `ConfigError` naming it. Each case crashed the load (or let a
bad row through) before the readers and field helpers were hardened."""

from __future__ import annotations

import copy
import json
from collections import Counter
from itertools import product
from pathlib import Path

import pytest
from paths import HUB_ROWS, SAMPLES

from mbt_online.config import ConfigError
from mbt_online.tasks import BENCHMARKS, MalformedRow, load_examples, parse_row
from mbt_online.tasks.base import MAX_RECORDS, MAX_ROW_CHARS

DIGITS = "9" * 5000  # past Python's 4,300-digit limit on int <-> str


def rows(dataset: str) -> list[dict]:
    text = SAMPLES[dataset].read_text()
    if dataset == "musique":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def jsonl(path: Path, lines: list[bytes | str]) -> Path:
    data = [x if isinstance(x, bytes) else x.encode() for x in lines]
    path.write_bytes(b"\n".join(data) + b"\n")
    return path


def dumps(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False)


# ---- bytes that are not UTF-8 ----


def test_a_json_lines_file_with_one_line_of_bad_bytes_skips_that_line(tmp_path):
    good = rows("musique")[:3]
    bad = dumps({**good[0], "id": "other"}).encode().replace(b'"question": "', b'"question": "\xff')
    path = jsonl(tmp_path / "m.jsonl", [dumps(good[0]), bad, dumps(good[1]), dumps(good[2])])
    result = load_examples("musique", path)
    assert [e.id for e in result.examples] == [r["id"] for r in good]
    assert (result.total, result.skipped) == (4, Counter(bad_utf8=1))


def test_a_json_array_with_bad_bytes_costs_only_the_row_that_holds_them(tmp_path):
    good = rows("hotpotqa")[:3]
    text = json.dumps(good).encode()
    question = good[1]["question"].encode()
    path = tmp_path / "h.json"
    path.write_bytes(text.replace(question, b"\xc3\x28" + question))  # an invalid 2-byte sequence
    result = load_examples("hotpotqa", path)
    assert [e.id for e in result.examples] == [good[0]["_id"], good[2]["_id"]]
    assert result.skipped == Counter(bad_utf8=1)


def test_an_escaped_lone_surrogate_is_bad_text(tmp_path):
    row = {**rows("hotpotqa")[0], "answer": "Paris\ud800"}
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(row) + "\n")  # ensure_ascii writes it as the escape `\ud800`
    assert load_examples("hotpotqa", path).skipped == Counter(bad_utf8=1)


def test_a_utf16_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(rows("hotpotqa")[:2]), encoding="utf-16")
    with pytest.raises(ConfigError, match="wide.json.*UTF-16"):
        load_examples("hotpotqa", path)


def test_a_line_separator_inside_a_json_string_does_not_split_the_row(tmp_path):
    row = {**rows("musique")[0], "question": "Who\u2028wrote\x85it?"}
    path = jsonl(tmp_path / "m.jsonl", [dumps(row)])
    result = load_examples("musique", path)
    assert result.skipped == Counter() and result.examples[0].question == "Who\u2028wrote\x85it?"


# ---- deep nesting, broken arrays ----


def test_deeply_nested_json_lines_are_counted(tmp_path):
    good = rows("musique")[0]
    deep = '{"id": "x", "question": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = jsonl(tmp_path / "m.jsonl", [deep, dumps(good)])
    result = load_examples("musique", path)
    assert [e.id for e in result.examples] == [good["id"]]
    assert result.skipped == Counter(too_deep=1)


def test_a_deeply_nested_or_broken_array_element_is_one_skipped_row(tmp_path):
    good = rows("2wikimultihopqa")[:2]
    deep = '{"_id": "x", "context": ' + "[" * 5000 + '"]" ,' + "]" * 5000 + "}"
    broken = '{"_id": "y", "question": tru, "context": [["a", ["b, ]"]]]}'
    text = f"[\n{json.dumps(good[0])},\n{deep}, {broken},\n {json.dumps(good[1])}\n]\n"
    path = tmp_path / "w.json"
    path.write_text(text)
    result = load_examples("2wikimultihopqa", path)
    assert [e.id for e in result.examples] == [r["_id"] for r in good]
    assert result.skipped == Counter(too_deep=1, bad_json=1)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('[{"_id": "a"}, {"_id": "b"', "never ends"),
        ('[{"_id": "a"} {"_id": "b"}]', "',' or ']' expected"),
        ('[{"_id": "a"}] trailing', "text after"),
    ],
)
def test_an_array_the_reader_cannot_walk_is_a_config_error_naming_the_file(tmp_path, text, why):
    path = tmp_path / "cut.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"cut.json.*{why}"):
        load_examples("hotpotqa", path)


def test_a_broken_parquet_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(ConfigError, match="rows.parquet"):
        load_examples("hotpotqa", path)


# ---- wrong types ----


def test_integer_and_dict_aliases(tmp_path):
    row = rows("musique")[0]
    assert parse_row("musique", {**row, "answer_aliases": 1984}).aliases == ["1984"]
    with pytest.raises(MalformedRow) as err:
        parse_row("musique", {**row, "answer_aliases": {"a": 1}})
    assert err.value.reason == "bad_aliases"
    with pytest.raises(MalformedRow) as err:
        parse_row("musique", {**row, "answer_aliases": ["ok", ["nested"]]})
    assert err.value.reason == "bad_aliases"


def test_list_valued_idx_and_support_idx():
    row = rows("musique")[0]
    listed = copy.deepcopy(row)
    listed["paragraphs"][0]["idx"] = [0]
    support = copy.deepcopy(row)
    support["question_decomposition"][0]["paragraph_support_idx"] = [1, 2]
    result = load_examples("musique", [listed, support])
    assert result.skipped == Counter(bad_idx=1, missing_support_paragraph=1)


def test_very_long_digit_strings(tmp_path):
    row = rows("musique")[0]
    hop_id = {**row, "id": DIGITS + "hop1__1_2"}  # the tier reads the hop count from the id
    sub = copy.deepcopy(row)
    sub["question_decomposition"][1]["question"] = "Who is #" + DIGITS + "?"
    number_question = {**row, "id": "n", "question": 10**5000}
    path = jsonl(tmp_path / "m.jsonl", ['{"id": "d", "question": ' + DIGITS + "}"])
    result = load_examples("musique", [hop_id, sub, number_question])
    assert result.skipped == Counter(bad_question=1) and len(result.examples) == 2
    assert result.examples[0].type == "2hop"  # a 5,000-digit hop count is no hop count
    assert result.examples[1].hops[1].question == "Who is #" + DIGITS + "?"
    assert load_examples("musique", path).skipped == Counter(bad_json=1)


JUNK = [[], {}, [["x"]], {"k": [1]}, True, 10**5000, float("nan"), "", None, 3, "\ud800"]


def _paths(value, prefix=()):
    """Every key path in a row, descending into the first item of lists and dict values."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield (*prefix, 0)
        yield from _paths(value[0], (*prefix, 0))


def _with(row, path, junk, n):
    row = copy.deepcopy(row)
    row["_id" if "_id" in row else "id"] = f"{n}"  # no repeat: each row shows its own reason
    target = row
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = junk
    return row


@pytest.mark.parametrize("dataset", BENCHMARKS)
@pytest.mark.parametrize("layout", ["official", "hub"])
def test_junk_in_every_field_is_a_row_or_a_counted_skip(dataset, layout):
    row = rows(dataset)[0]
    if layout == "hub":
        row = json.loads((HUB_ROWS / f"{dataset}.json").read_text())[0]
    bad = [_with(row, p, junk, n) for n, (p, junk) in enumerate(product(_paths(row), JUNK))]
    result = load_examples(dataset, bad)
    assert result.total == len(bad)
    assert sum(result.skipped.values()) + len(result.examples) == len(bad)
    assert "unreadable" not in result.skipped  # every case has a named reason


# ---- sizes and repeats ----


def test_rows_past_the_size_caps_are_skipped_with_their_reason(tmp_path):
    good = rows("hotpotqa")[:2]
    huge = {**good[0], "_id": "huge", "question": "x" * MAX_ROW_CHARS}
    many = {**good[0], "_id": "many", "context": good[0]["context"] * (MAX_RECORDS // 10 + 1)}
    facts = {**good[0], "_id": "facts", "supporting_facts": good[0]["supporting_facts"] * 300}
    lines = [dumps(r) for r in (huge, many, facts, *good)]
    result = load_examples("hotpotqa", jsonl(tmp_path / "h.jsonl", lines))
    expected = Counter(too_large=1, too_many_documents=1, too_many_facts=1)
    assert [e.id for e in result.examples] == [r["_id"] for r in good]
    assert result.skipped == expected
    array = tmp_path / "h.json"
    array.write_text(json.dumps([huge, many, facts, *good]))
    assert load_examples("hotpotqa", array).skipped == expected
    steps = copy.deepcopy(rows("musique")[0])
    steps["question_decomposition"] *= MAX_RECORDS
    assert load_examples("musique", [steps]).skipped == Counter(too_many_hops=1)


def test_duplicate_ids_are_counted_and_the_first_kept(tmp_path):
    a, b = rows("2wikimultihopqa")[:2]
    again = {**a, "question": "Asked again?"}
    result = load_examples("2wikimultihopqa", [a, b, again, b])
    assert [e.id for e in result.examples] == [a["_id"], b["_id"]]
    assert result.examples[0].question == a["question"]
    assert (result.total, result.skipped) == (4, Counter(duplicate_id=2))
