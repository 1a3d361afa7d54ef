"""2WikiMultihopQA's answer aliases: `id_aliases.json` read beside the data file or from the
config, and every question scored against the answer plus its aliases and demonyms exactly as the
official `2wikimultihop_evaluate_v1.1.py` scores it (its answer half is transcribed in
tests/support/official_2wiki.py)."""

from __future__ import annotations

import json
import logging
import shutil

import official_2wiki as official
import pytest
from paths import SAMPLES, TWOWIKI_IDS

from mbt_online.config import ConfigError, load_config
from mbt_online.rundir.integrity import data_files
from mbt_online.scoring.metrics import cover_match, exact_match, f1_score
from mbt_online.tasks import load_examples
from mbt_online.tasks.mixture import check_data_paths, load_split
from mbt_online.tasks.twowiki import ALIASES_FILE, aliases_file, read_id_aliases

DEV = TWOWIKI_IDS / "dev.json"
ALIASES = TWOWIKI_IDS / ALIASES_FILE
NAME = "2wikimultihopqa"


def by_answer(examples):
    return {ex.answer: ex for ex in examples}


def test_the_alias_file_beside_the_data_file_is_read():
    res = load_examples(NAME, DEV)
    assert (res.total, len(res.examples), sum(res.skipped.values())) == (6, 6, 0)
    ex = by_answer(res.examples)
    assert ex["Austria"].answers == [
        "Austria",
        "Republic of Austria",
        "Österreich",
        "AUT",
        "Austrian",  # demonyms follow the aliases
    ]
    assert ex["Korea"].answers == ["Korea", "Corea", "Korean"]
    assert ex["Helsingfors"].answers == ["Helsingfors", "Helsinki", "Stadi"]
    assert ex["Cork"].answers == ["Cork"]  # its answer_id is not in the file
    assert ex["yes"].answers == ["yes"]  # no answer_id


# (answer, prediction, EM, F1): worked by hand from the official rules; the test below also
# checks each against the transcribed script
CASES = [
    ("Austria", "Austrian", 1.0, 1.0),  # a demonym
    ("Austria", "the Republic of Austria", 1.0, 1.0),  # an alias; "the" is dropped
    ("Austria", "Austrian Empire", 0.0, 2 / 3),  # best over golds: "austrian" p 1/2 r 1
    ("US", "American", 1.0, 1.0),
    ("US", "United States", 0.0, 2 / 3),  # vs "united states of america": p 2/2, r 2/4
    ("Korea", "Korean peninsula", 0.0, 2 / 3),  # the demonym "korean": p 1/2, r 1
    ("Helsingfors", "Helsinki", 1.0, 1.0),  # the Swedish name is the gold, the Finnish an alias
    ("Helsingfors", "Espoo", 0.0, 0.0),
    ("Cork", "Cork City", 0.0, 2 / 3),  # no aliases: the answer alone
    ("yes", "yes it is", 0.0, 0.0),  # the yes / no rule holds over aliases too
]


@pytest.mark.parametrize(("answer", "pred", "em", "f1"), CASES)
def test_aliases_and_demonyms_score_as_the_official_script(answer, pred, em, f1):
    ex = by_answer(load_examples(NAME, DEV).examples)[answer]
    rows = {row["answer"]: row for row in json.loads(DEV.read_text())}
    want = official.score(pred, rows[answer], official.read_aliases(ALIASES))
    assert want == (em, pytest.approx(f1, abs=1e-12))
    assert exact_match(pred, ex.answers) == want[0]
    assert f1_score(pred, ex.answers, NAME) == want[1]  # bit for bit


def test_every_question_and_gold_scores_as_the_official_script():
    """Each gold string of each question as a prediction, plus a partial and a wrong one: the
    package's EM and F1 equal the official ones on all of them."""
    aliases = official.read_aliases(ALIASES)
    rows = {row["_id"]: row for row in json.loads(DEV.read_text())}
    checked = 0
    for ex in load_examples(NAME, DEV).examples:
        assert set(ex.answers) == official.gold_answers(rows[ex.id], aliases)
        for pred in [*ex.answers, f"{ex.answers[-1]} city", "Vienna"]:
            assert (exact_match(pred, ex.answers), f1_score(pred, ex.answers, NAME)) == (
                official.score(pred, rows[ex.id], aliases)
            )
            checked += 1
    assert checked == 31  # 3 + 5 + 6 + 3 + 1 + 1 golds, and 2 more predictions each


def test_the_answer_alone_without_the_alias_file(tmp_path):
    shutil.copy(DEV, tmp_path / "dev.json")
    ex = by_answer(load_examples(NAME, tmp_path / "dev.json").examples)
    assert ex["Austria"].answers == ["Austria"]
    assert exact_match("Austrian", ex["Austria"].answers) == 0.0
    assert f1_score("Austrian", ex["Austria"].answers, NAME) == 0.0
    # the shipped sample has no answer ids and no alias file beside it
    assert all(e.aliases == [] for e in load_examples(NAME, SAMPLES[NAME], limit=10).examples)


def test_cover_and_the_reward_see_the_aliases_too():
    ex = by_answer(load_examples(NAME, DEV).examples)
    assert cover_match("He was Austrian", ex["Austria"].answers) == 1.0
    assert cover_match("He was Austrian", ["Austria"]) == 0.0


def config_with(tmp_path, **split):
    dotted = [f"data.eval.{k}={json.dumps(v)}" for k, v in split.items()]
    return load_config(None, ["data.eval.dataset=2wikimultihopqa", *dotted])


def test_aliases_path_named_in_the_config(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "meta").mkdir()
    shutil.copy(DEV, tmp_path / "data" / "dev.json")
    shutil.copy(ALIASES, tmp_path / "meta" / "aliases.jsonl")
    cfg = config_with(
        tmp_path,
        path=str(tmp_path / "data" / "dev.json"),
        aliases_path=str(tmp_path / "meta" / "aliases.jsonl"),
        shuffle=False,
    )
    check_data_paths(cfg)
    ex = by_answer(load_split(cfg, "eval"))
    assert ex["US"].answers == [
        "US",
        "United States of America",
        "USA",
        "America",
        "the States",
        "American",
    ]
    # the alias file moves the scores, so a resume checks it like the data file
    files = data_files(cfg)
    assert files["data.eval.aliases_path"] == (
        str(tmp_path / "meta" / "aliases.jsonl"),
        tmp_path / "meta" / "aliases.jsonl",
    )


def test_the_alias_file_beside_the_data_is_recorded(tmp_path):
    cfg = config_with(tmp_path, path=str(DEV))
    assert data_files(cfg)["data.eval.aliases_path"] == (str(ALIASES), ALIASES)
    shutil.copy(DEV, tmp_path / "dev.json")
    assert "data.eval.aliases_path" not in data_files(
        config_with(tmp_path, path=str(tmp_path / "dev.json"))
    )


def test_a_missing_alias_file_is_refused_naming_the_key(tmp_path):
    cfg = config_with(tmp_path, path=str(DEV), aliases_path=str(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match=r"data\.eval\.aliases_path: file not found: .*none"):
        check_data_paths(cfg)
    with pytest.raises(FileNotFoundError, match="none.json"):
        aliases_file(DEV, tmp_path / "none.json")


def test_only_2wiki_takes_an_alias_file(tmp_path):
    with pytest.raises(ConfigError, match="aliases_path: only dataset=2wikimultihopqa"):
        load_config(None, ["data.eval.dataset=hotpotqa", f"data.eval.aliases_path={ALIASES}"])
    with pytest.raises(ValueError, match="only 2wikimultihopqa reads an alias file"):
        load_examples("hotpotqa", SAMPLES["hotpotqa"], aliases_path=ALIASES)


def test_unreadable_alias_entries_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / ALIASES_FILE
    lines = [
        '{"Q_id": "Q1", "aliases": ["One", " "], "demonyms": ["Oner"]}',
        '{"Q_id": 2, "aliases": ["Two"], "demonyms": []}',  # id not a string
        '{"Q_id": "Q3", "aliases": "Three", "demonyms": []}',  # aliases not a list
        "not json",
        '{"Q_id": "Q1", "aliases": ["Uno"], "demonyms": []}',  # a repeated id adds to the first
        '{"Q_id": "Q4"}',  # no lists: no aliases
    ]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="mbt_online"):
        table = read_id_aliases(path)
    assert table == {"Q1": ["One", "Oner", "Uno"], "Q4": []}
    assert "skipped 3 unreadable alias entries" in caplog.text
