"""The tasks room: benchmark parsers on the shipped dev samples, their hub layouts and broken
rows; the one list of data set names; data paths that name a shipped sample."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from paths import CONFIGS_DIR, HUB_ROWS, SAMPLE_NAMES, SAMPLES

from mbt_online.config import ConfigError, DataSplit, load_config
from mbt_online.tasks import (
    BENCHMARKS,
    DATASETS,
    PARSERS,
    Example,
    Hop,
    LoadResult,
    MalformedRow,
    hotpotqa,
    keep_distractors,
    load_examples,
    musique,
    parse_row,
    resolve_data_path,
    twowiki,
)
from mbt_online.tasks.base import shipped_samples
from mbt_online.tasks.mixture import check_data_paths

FILES = SAMPLES
COUNTS = {"hotpotqa": 103, "musique": 100, "2wikimultihopqa": 100}


def raw_rows(dataset: str) -> list[dict]:
    text = FILES[dataset].read_text()
    if dataset == "musique":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def hub_rows(dataset: str) -> list[dict]:
    """The first 6 sample rows as the hub copies store them (see tests/data/README.md)."""
    return json.loads((HUB_ROWS / f"{dataset}.json").read_text())


# ---- the real samples ----


@pytest.mark.parametrize("dataset", BENCHMARKS)
def test_loads_real_sample(dataset: str) -> None:
    result = load_examples(dataset, FILES[dataset])
    assert isinstance(result, LoadResult)
    assert result.total == COUNTS[dataset]
    assert len(result.examples) >= 0.98 * COUNTS[dataset]
    assert len(result.examples) + sum(result.skipped.values()) == result.total
    for ex in result.examples:
        assert ex.source == dataset
        assert ex.tier in {"easy", "medium", "hard"}
        assert ex.question and ex.answer and ex.documents
        assert ex.supporting_titles and len(set(ex.supporting_titles)) == len(ex.supporting_titles)
        titles = {t for t, _ in ex.documents}
        assert set(ex.supporting_titles) <= titles
        for title, sentence in ex.supporting_sentences:
            assert sentence and any(t == title and sentence in text for t, text in ex.documents)


def test_hotpot_row_fields() -> None:
    ex = load_examples("hotpotqa", FILES["hotpotqa"], limit=1).examples[0]
    assert ex.id == "5a8b57f25542995d1e6f1371"
    assert ex.answer == "yes" and ex.aliases == [] and ex.hops == []
    assert ex.type == "comparison" and ex.tier == "easy"
    assert len(ex.documents) == 10
    assert ex.supporting_titles == ["Scott Derrickson", "Ed Wood"]
    assert ex.supporting_sentences[0] == (
        "Scott Derrickson",
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer.",
    )
    # sentences keep their own spacing once: no leading blanks, single spaces between them
    derrickson = dict(ex.documents)["Scott Derrickson"]
    assert derrickson.startswith("Scott Derrickson (born") and "producer. He lives" in derrickson


def test_hotpot_json_lines_copy_loads_the_same(tmp_path: Path) -> None:
    # a JSON-lines file with a .json name: the format is read from the content
    copy_path = tmp_path / "hotpot_copy.json"
    copy_path.write_text("\n".join(json.dumps(r) for r in raw_rows("hotpotqa")) + "\n")
    assert load_examples("hotpotqa", copy_path) == load_examples("hotpotqa", FILES["hotpotqa"])


@pytest.mark.parametrize("dataset", BENCHMARKS)
def test_hub_layout_gives_equal_examples(dataset: str) -> None:
    for hub, row in zip(hub_rows(dataset), raw_rows(dataset)[:6], strict=True):
        assert parse_row(dataset, hub) == parse_row(dataset, row)


@pytest.mark.parametrize("dataset", BENCHMARKS)
def test_hub_dataset_and_parquet_sources(dataset: str, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = raw_rows(dataset)[:5]
    expected = load_examples(dataset, rows).examples
    hub = datasets.Dataset.from_list(hub_rows(dataset)[:5])
    assert load_examples(dataset, hub).examples == expected
    # parquet, named without its extension: detected by its magic bytes
    path = tmp_path / "rows.data"
    hub.to_parquet(str(path))
    assert load_examples(dataset, path).examples == expected
    hub.save_to_disk(str(tmp_path / "saved"))
    assert load_examples(dataset, tmp_path / "saved").examples == expected


def test_musique_list_of_structs_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    rows = raw_rows("musique")[:3]
    loaded = load_examples("musique", datasets.Dataset.from_list(rows))
    assert loaded.examples == load_examples("musique", rows).examples


def test_wiki_hub_aliases() -> None:
    row = hub_rows("2wikimultihopqa")[0]
    row["answer_aliases"] = ["Cork", "Cork, Ireland", "Cork City", "Cork, Ireland"]
    assert parse_row("2wikimultihopqa", row).aliases == ["Cork, Ireland", "Cork City"]


def test_musique_aliases() -> None:
    ex = parse_row("musique", raw_rows("musique")[7])
    assert ex.answer == "Hewlett Packard" and ex.aliases == ["Hewlett-Packard"]
    assert ex.answers == ["Hewlett Packard", "Hewlett-Packard"]


# ---- malformed input ----


def test_malformed_rows_are_counted_and_good_rows_still_load(tmp_path: Path) -> None:
    good = raw_rows("hotpotqa")[:4]
    no_question = {k: v for k, v in good[0].items() if k != "question"}
    empty_answer = {**good[0], "answer": "  "}
    no_context = {k: v for k, v in good[0].items() if k != "context"}
    empty_docs = {**good[0], "context": []}
    bad_title = copy.deepcopy(good[0])
    bad_title["supporting_facts"][0][0] = "No Such Page"
    bad_sentence = copy.deepcopy(good[0])
    bad_sentence["supporting_facts"][1][1] = 99
    lines = [json.dumps(r) for r in good[:2]]
    lines += ['{"_id": "broken", "question": ', json.dumps(["a", "list"]), "42"]
    lines += [json.dumps(r) for r in (no_question, empty_answer, no_context, empty_docs)]
    lines += [json.dumps(r) for r in (bad_title, bad_sentence, *good[2:])]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n\n")

    result = load_examples("hotpotqa", path)
    assert [e.id for e in result.examples] == [r["_id"] for r in good]
    assert result.total == 13
    assert result.skipped == Counter(
        {
            "bad_json": 1,
            "not_a_dict": 2,
            "missing_question": 1,
            "missing_answer": 1,
            "missing_context": 1,
            "empty_documents": 1,
            "missing_supporting_title": 1,
            "bad_sentence_id": 1,
        }
    )


def test_malformed_musique_and_wiki_rows() -> None:
    musique = raw_rows("musique")[:3]
    unanswerable = {**musique[0], "answerable": False}
    lost_paragraph = copy.deepcopy(musique[1])
    lost_paragraph["question_decomposition"][0]["paragraph_support_idx"] = 99
    no_steps = {**musique[2], "question_decomposition": []}
    result = load_examples("musique", [*musique, unanswerable, lost_paragraph, no_steps, None])
    assert len(result.examples) == 3 and result.total == 7
    assert result.skipped == Counter(
        unanswerable=1, missing_support_paragraph=1, missing_decomposition=1, not_a_dict=1
    )

    wiki = raw_rows("2wikimultihopqa")[0]
    ragged = hub_rows("2wikimultihopqa")[0]
    ragged["context"]["content"].pop()  # parallel lists of different lengths
    with pytest.raises(MalformedRow) as err:
        parse_row("2wikimultihopqa", ragged)
    assert err.value.reason == "bad_layout"
    no_id = {k: v for k, v in wiki.items() if k != "_id"}
    assert load_examples("2wikimultihopqa", [no_id, wiki]).skipped == Counter(missing_id=1)


def test_missing_file_and_unknown_dataset(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_examples("hotpotqa", missing)
    with pytest.raises(ValueError, match="squad"):
        load_examples("squad", FILES["hotpotqa"])
    with pytest.raises(ValueError, match="squad"):
        parse_row("squad", {})


# ---- tiers ----


def test_hotpot_tiers() -> None:
    rows = raw_rows("hotpotqa")
    tier = {i: parse_row("hotpotqa", rows[i]).tier for i in (0, 1, 2, 4, 34)}
    # 0: comparison, 2 facts; 4: bridge, 2 facts; 1 and 2: bridge with 3 and 5 facts;
    # 34: comparison with 3+ facts, where the fact count overrides the type
    assert tier == {0: "easy", 4: "medium", 1: "hard", 2: "hard", 34: "hard"}
    assert rows[34]["type"] == "comparison" and len(rows[34]["supporting_facts"]) >= 3


def test_wiki_tiers() -> None:
    rows = raw_rows("2wikimultihopqa")
    by_type = {}
    for row in rows:
        by_type.setdefault(row["type"], parse_row("2wikimultihopqa", row).tier)
    assert by_type == {
        "compositional": "medium",
        "bridge_comparison": "hard",
        "comparison": "easy",
        "inference": "medium",
    }


def test_musique_tiers_from_id_or_decomposition() -> None:
    row = raw_rows("musique")[4]
    assert parse_row("musique", row).tier == "easy"
    assert parse_row("musique", {**row, "id": "3hop1__1_2_3"}).tier == "medium"
    four = parse_row("musique", {**row, "id": "4hop2__1_2_3_4"})
    assert (four.tier, four.type) == ("hard", "4hop2")
    # no hop prefix: the decomposition length decides
    three_steps = {**row, "id": "q17"}
    extra = {**row["question_decomposition"][1], "question": "Who succeeded #2?"}
    three_steps["question_decomposition"] = [*row["question_decomposition"], extra]
    ex = parse_row("musique", three_steps)
    assert (ex.tier, ex.type) == ("medium", "3hop")
    assert ex.hops[2].question == "Who succeeded Lyons' death in 1939?"


# ---- distractors, limit, offset, shuffle ----


def test_distractors_keep_gold_plus_first_n() -> None:
    full = load_examples("hotpotqa", FILES["hotpotqa"], limit=1).examples[0]
    two = load_examples("hotpotqa", FILES["hotpotqa"], limit=1, distractors=2).examples[0]
    # context order: Ed Wood (film), Scott Derrickson, Woodson Arkansas, Tyler Bates, Ed Wood, ...
    assert [t for t, _ in two.documents] == [
        "Ed Wood (film)",
        "Scott Derrickson",
        "Woodson, Arkansas",
        "Ed Wood",
    ]
    assert two.documents[1] == full.documents[1]
    none = keep_distractors(full, 0)
    assert [t for t, _ in none.documents] == ["Scott Derrickson", "Ed Wood"]
    assert keep_distractors(full, 50).documents == full.documents


def test_musique_distractors_tell_apart_paragraphs_with_one_title() -> None:
    # row 5: "Miracle on 34th Street" is supporting at idx 19, other paragraphs share titles
    ex = parse_row("musique", raw_rows("musique")[5])
    gold = keep_distractors(ex, 0)
    assert [t for t, _ in gold.documents] == ["Five Finger Exercise", "Miracle on 34th Street"]
    assert gold.documents[1][1] == raw_rows("musique")[5]["paragraphs"][19]["paragraph_text"]
    # row 4: both hops use different paragraphs titled "Liberal Party of Australia"
    ex = parse_row("musique", raw_rows("musique")[4])
    assert len(keep_distractors(ex, 0).documents) == 2
    counts = Counter(
        len(keep_distractors(e, 0).documents)
        for e in load_examples("musique", FILES["musique"]).examples
    )
    assert counts == Counter({2: 100})  # every sample row is 2-hop with 2 supporting paragraphs


def test_limit_offset_shuffle() -> None:
    ids = [r["_id"] for r in raw_rows("2wikimultihopqa")]
    capped = load_examples("2wikimultihopqa", FILES["2wikimultihopqa"], limit=5)
    assert [e.id for e in capped.examples] == ids[:5] and capped.total == 5
    window = load_examples("2wikimultihopqa", FILES["2wikimultihopqa"], offset=3, limit=2)
    assert [e.id for e in window.examples] == ids[3:5]

    def order(seed: int, **kw) -> list[str]:
        loaded = load_examples(
            "2wikimultihopqa", FILES["2wikimultihopqa"], shuffle=True, seed=seed, **kw
        )
        return [e.id for e in loaded.examples]

    shuffled = order(0)
    assert shuffled == order(0) and shuffled != ids and sorted(shuffled) == sorted(ids)
    assert order(1) != shuffled
    assert order(0, offset=10, limit=7) == shuffled[10:17]


# ---- hops ----


def test_musique_hops() -> None:
    ex = parse_row("musique", raw_rows("musique")[0])
    assert ex.id == "2hop__574419_270105" and ex.type == "2hop" and ex.answer == "Stanley"
    assert ex.hops == [
        Hop(
            question="Van Hook Township >> located in the administrative territorial entity",
            answer="Mountrail County",
            title="Van Hook Township, Mountrail County, North Dakota",
            evidence="Van Hook Township is a township in Mountrail County in the U.S. state of "
            "North Dakota.",
        ),
        Hop(
            question="Mountrail County >> capital",
            answer="Stanley",
            title="Mountrail County Courthouse",
            evidence="The Mountrail County Courthouse in Stanley, North Dakota was built in 1914 "
            "and served Mountrail County as its courthouse continuously since then.",
        ),
    ]
    assert ex.supporting_titles == [h.title for h in ex.hops]
    assert ex.supporting_sentences == [(h.title, h.evidence) for h in ex.hops]
    natural = parse_row("musique", raw_rows("musique")[4]).hops[1]
    assert natural.question == "What event caused Robert Menzies to become Prime Minister?"
    assert natural.evidence.startswith("Lyons' death in 1939 saw Robert Menzies")


def test_wiki_hops() -> None:
    ex = parse_row("2wikimultihopqa", raw_rows("2wikimultihopqa")[0])
    assert ex.type == "compositional" and ex.answer == "Cork"
    assert ex.hops == [
        Hop(
            question="What is the father of Charles James Mathew?",
            answer="Sir James Charles Mathew",
            title="Charles Mathew",
            evidence="The second son of Sir James Charles Mathew, a Lord Justice of Appeal, "
            "Charles James Mathew was educated at The Oratory School, Edgbaston, Birmingham and "
            "Trinity Hall, Cambridge.",
        ),
        Hop(
            question="What is the place of burial of Sir James Charles Mathew?",
            answer="Cork",
            title="James Charles Mathew",
            evidence="Born in an Irish Catholic family in Cork, Mathew was educated at the "
            "largely Protestant Trinity College, Dublin, before joining the English bar.",
        ),
    ]
    # bridge_comparison: four triples, each grounded in its own supporting document
    four = parse_row("2wikimultihopqa", raw_rows("2wikimultihopqa")[1]).hops
    assert [(h.title, h.answer) for h in four] == [
        ("The More the Merrier", "George Stevens"),
        ("Sleep, My Love", "Douglas Sirk"),
        ("George Stevens", "March 8, 1975"),
        ("Douglas Sirk", "14 January 1987"),
    ]
    assert four[0].evidence == "The movie was directed by George Stevens."


# ---- one list of data sets ----


def test_one_list_of_data_sets_feeds_registry_schema_and_cli() -> None:
    from typing import get_args

    from mbt_online.cli import DATASET_HELP

    assert DATASETS[:-1] == BENCHMARKS and DATASETS[-1] == "world"
    assert tuple(PARSERS) == BENCHMARKS
    assert [m.NAME for m in (hotpotqa, musique, twowiki)] == list(BENCHMARKS)
    assert get_args(DataSplit.model_fields["dataset"].annotation) == DATASETS
    assert all(name in DATASET_HELP for name in BENCHMARKS)
    assert isinstance(parse_row("hotpotqa", raw_rows("hotpotqa")[0]), Example)


def test_importing_the_tasks_and_the_config_loads_no_data_library() -> None:
    code = (
        "import sys, mbt_online.config, mbt_online.tasks, mbt_online.tasks.mixture; "
        "print(sorted(m for m in ('datasets', 'pyarrow', 'mbt_online.sim') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---- data paths that name a shipped sample ----


def test_pkg_paths_name_the_shipped_samples() -> None:
    for name, rel in SAMPLE_NAMES.items():
        assert resolve_data_path(f"pkg://samples/{rel}") == FILES[name]
        # an option typed as Path collapses the double slash: still the same file
        assert resolve_data_path(Path(f"pkg://samples/{rel}")) == FILES[name]
    assert shipped_samples() == sorted(f"pkg://samples/{rel}" for rel in SAMPLE_NAMES.values())
    assert resolve_data_path("data/x.json") == Path("data/x.json")
    by_pkg = load_examples("musique", f"pkg://samples/{SAMPLE_NAMES['musique']}", limit=3)
    assert by_pkg == load_examples("musique", FILES["musique"], limit=3)


def test_a_missing_pkg_path_fails_with_the_key_and_the_shipped_samples(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shipped: pkg://samples/2wikimultihopqa/"):
        load_examples("hotpotqa", "pkg://samples/hotpotqa/nope.json")
    cfg = load_config(CONFIGS_DIR / "smollm2-smoke-cpu.yaml")
    cfg.data.eval_more[0].path = "pkg://samples/musique/dev.jsonl"
    with pytest.raises(ConfigError, match=r"^data\.eval_more\.0\.path: file not found: pkg://"):
        check_data_paths(cfg)


@pytest.mark.parametrize("config", ["smollm2-smoke-cpu.yaml", "smollm2-mhqa-cpu.yaml"])
def test_shipped_real_data_configs_read_shipped_samples_from_any_cwd(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS_DIR / config)
    paths = [s.path for _, s in cfg.data.splits()]
    assert len(paths) == 6 and all(p.startswith("pkg://samples/") for p in paths)
    check_data_paths(cfg)
