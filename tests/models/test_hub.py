"""Hub ids for models and data sets, offline: a temporary HF_HOME holding the tiny student in the
hub cache layout, HF_HUB_OFFLINE=1, and a hub-layout data set read through `datasets.load_dataset`.
No network is used: an online probe goes to a closed local port."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import time
from pathlib import Path

import pytest
from fakes import Fakes, quick_datasets, tiny_config  # noqa: F401 - quick_datasets: a fixture
from paths import HUB_ROWS, SAMPLES
from typer.testing import CliRunner

from mbt_online import loop
from mbt_online.cli import app
from mbt_online.config import ConfigError, load_config
from mbt_online.models import hub
from mbt_online.models.pretrained import resolve_student
from mbt_online.rundir import RunState
from mbt_online.tasks import load_examples
from mbt_online.tasks.mixture import check_data_paths, load_source

REPO_ID = "tiny-org/tiny-student"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def own_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's hub and datasets caches are its own (load_dataset writes an arrow cache)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-own"))
    for var in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def hf_home(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HOME whose hub cache holds the tiny student as `tiny-org/tiny-student` at `main`."""
    home = tmp_path / "hf"
    repo = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def snapshot(home: Path) -> Path:
    return home / "hub" / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / COMMIT


# ---- models ----


def test_a_cached_hub_id_resolves_offline(hf_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "runs", **{"student.model": REPO_ID})
    assert resolve_student(cfg) == str(snapshot(hf_home).resolve())
    assert loop.resolve_student(cfg) == str(snapshot(hf_home).resolve())


def test_a_run_starts_from_a_cached_hub_id(hf_home: Path, tmp_path: Path) -> None:
    """The loop-flow fakes, but the initial model is the resolved hub snapshot."""
    cfg = tiny_config(tmp_path / "runs", **{"student.model": REPO_ID, "loop.rounds": 1})
    fakes = Fakes(cfg)
    seen: list[str] = []

    def drivers(cfg, run_dir):
        initial = loop.resolve_student(cfg)
        seen.append(initial)
        return dataclasses.replace(fakes.drivers(cfg, run_dir), initial=initial)

    run_dir = loop.train(cfg, drivers=drivers)
    assert seen == [str(snapshot(hf_home).resolve())]
    assert RunState.load(run_dir).finished


def test_an_uncached_id_fails_before_any_run_directory(hf_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "runs", **{"student.model": "tiny-org/not-cached"})
    run_dir = cfg.run_dir()
    for _ in range(2):  # the same command again says the same thing, not "already holds a run"
        start = time.monotonic()
        with pytest.raises(ConfigError) as err:
            loop.train(cfg, drivers=Fakes(cfg).drivers)
        assert time.monotonic() - start < 5
        msg = str(err.value)
        assert "student.model" in msg and "'tiny-org/not-cached'" in msg
        assert "mbt-online models fetch tiny-org/not-cached" in msg and "HF_HUB_OFFLINE" in msg
        assert not run_dir.exists() and not Path(cfg.run.runs_dir).exists()


def test_an_unreachable_hub_fails_in_seconds(
    hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online but uncached: the hub is asked (here a closed local port) and the refusal is fast."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    cfg = tiny_config(tmp_path / "runs", **{"student.model": "tiny-org/not-cached"})
    start = time.monotonic()
    with pytest.raises(ConfigError, match="not in the hub cache.*models fetch tiny-org/not-cached"):
        loop.train(cfg, drivers=Fakes(cfg).drivers)
    assert time.monotonic() - start < 15
    assert not cfg.run_dir().exists()


def test_a_vllm_teacher_model_is_checked_before_the_run(hf_home: Path, tmp_path: Path) -> None:
    overrides = {"teacher.backend": "vllm", "teacher.model": "tiny-org/no-teacher"}
    cfg = tiny_config(tmp_path / "runs", **overrides)
    with pytest.raises(ConfigError, match="teacher.model: 'tiny-org/no-teacher'"):
        loop.train(cfg, drivers=Fakes(cfg).drivers)
    assert not cfg.run_dir().exists()
    cached = tiny_config(tmp_path / "runs", **{**overrides, "teacher.model": REPO_ID})
    loop._check_models(cached)  # cached: accepted


def test_a_snapshot_without_config_is_refused(hf_home: Path, tmp_path: Path) -> None:
    (snapshot(hf_home) / "config.json").unlink()
    cfg = tiny_config(tmp_path / "runs", **{"student.model": REPO_ID})
    with pytest.raises(ConfigError, match="no config.json"):
        loop._check_models(cfg)


def test_models_fetch_offline(hf_home: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["models", "fetch", REPO_ID])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith(COMMIT)
    res = runner.invoke(app, ["models", "fetch", "tiny-org/not-cached"])
    assert res.exit_code == 1
    assert "HF_HUB_OFFLINE" in res.output and "tiny-org/not-cached" in res.output


def test_a_local_folder_wins_over_a_hub_id(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not hub.is_hub_id("org/model")
    assert hub.is_hub_id("Qwen/Qwen3-0.6B") and not hub.is_hub_id("/abs/path")


# ---- data sets ----

# The hub copies store each benchmark in the layout of tests/data/hub (see its README); a hub
# dataset repo keeps its splits as parquet files under data/.


def hub_repo(tmp_path: Path, dataset: str, rows: list[dict]) -> Path:
    """A local folder laid out like a hub dataset repo: data/validation-00000-of-00001.parquet."""
    import datasets

    repo = tmp_path / f"{dataset}-repo"
    (repo / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(
        str(repo / "data" / "validation-00000-of-00001.parquet")
    )
    return repo


def official_rows(dataset: str) -> list[dict]:
    path = SAMPLES[dataset]
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def hotpot_hub_row(row: dict) -> dict:
    """One official HotpotQA record in `hotpotqa/hotpot_qa`'s layout (structs of lists)."""
    return {
        "id": row["_id"],
        "question": row["question"],
        "answer": row["answer"],
        "type": row["type"],
        "level": row["level"],
        "supporting_facts": {
            "title": [t for t, _ in row["supporting_facts"]],
            "sent_id": [i for _, i in row["supporting_facts"]],
        },
        "context": {
            "title": [t for t, _ in row["context"]],
            "sentences": [s for _, s in row["context"]],
        },
    }


def assert_same(hub_ex, official_ex) -> None:
    assert len(hub_ex) == len(official_ex) > 0
    for a, b in zip(hub_ex, official_ex, strict=True):
        assert (a.id, a.question, a.answer) == (b.id, b.question, b.answer)
        assert a.documents == b.documents
        assert a.supporting_titles == b.supporting_titles
        assert a.supporting_sentences == b.supporting_sentences
        assert a == b


def test_the_whole_hotpot_sample_through_load_dataset_equals_the_official_file(
    tmp_path: Path,
) -> None:
    """Every record of the shipped HotpotQA sample, converted to the hub layout, written as a hub
    repo's parquet split and read back by `datasets.load_dataset(<folder>, split=...)`."""
    rows = [hotpot_hub_row(r) for r in official_rows("hotpotqa")]
    repo = hub_repo(tmp_path, "hotpotqa", rows)
    data = hub.load_dataset_split(str(repo), None, "validation")
    assert_same(
        load_examples("hotpotqa", data).examples,
        load_examples("hotpotqa", SAMPLES["hotpotqa"]).examples,
    )


@pytest.mark.parametrize("dataset", ["hotpotqa", "musique", "2wikimultihopqa"])
def test_a_hub_data_source_equals_the_official_file(dataset: str, tmp_path: Path) -> None:
    """A config naming `data.eval.hub` loads the same examples as the official file's rows."""
    hub_rows = json.loads((HUB_ROWS / f"{dataset}.json").read_text())
    repo = hub_repo(tmp_path, dataset, hub_rows)
    cfg = load_config(
        None,
        [
            f"data.eval.dataset={dataset}",
            f"data.eval.hub={repo}",
            "data.eval.hub_split=validation",
            "data.eval.shuffle=false",
        ],
    )
    check_data_paths(cfg)
    got = load_source(cfg.data.eval, cfg, "eval").examples
    want = load_examples(dataset, official_rows(dataset)[: len(hub_rows)]).examples
    assert_same(got, want)


def test_an_uncached_hub_data_set_fails_offline(hf_home: Path) -> None:
    cfg = load_config(None, ["data.eval.dataset=hotpotqa", "data.eval.hub=nobody/no-such-set"])
    start = time.monotonic()
    with pytest.raises(ConfigError, match="data.eval.hub: .*'nobody/no-such-set'"):
        check_data_paths(cfg)
    assert time.monotonic() - start < 15


def test_a_benchmark_source_names_a_path_or_a_hub_set_not_both() -> None:
    with pytest.raises(ConfigError, match="data.eval.path is required .*data.eval.hub"):
        load_config(None, ["data.eval.dataset=hotpotqa"])
    with pytest.raises(ConfigError, match="not both"):
        load_config(
            None, ["data.eval.dataset=hotpotqa", "data.eval.path=x.json", "data.eval.hub=a/b"]
        )


# ---- student.chat_template ----

QWEN3_STYLE = (  # the part of Qwen3's template that matters here: earlier turns lose their thinking
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' and '</think>' in m['content'] %}"
    "{{ m['content'].split('</think>')[-1].lstrip('\\n') }}"
    "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_verbatim_renders_a_think_trace_byte_for_byte(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from mbt_online.prompts import format_target, use_chat_template

    prompt = [{"role": "user", "content": "Who directed  Ed Wood?\n(two spaces kept)"}]
    completion = format_target("Ed Wood (film) says:  Tim Burton.\n\nSo Tim Burton.", "Tim Burton")
    chat = [*prompt, {"role": "assistant", "content": completion}]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = QWEN3_STYLE  # a model whose own template rewrites reasoning
    assert completion not in tok.apply_chat_template(chat, tokenize=False)
    assert use_chat_template(tok, "model").chat_template == QWEN3_STYLE
    verbatim = use_chat_template(tok, "verbatim")
    head = verbatim.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = verbatim.apply_chat_template(chat, tokenize=False)
    assert full.startswith(head) and full[len(head) :] == completion + "<|im_end|>\n"
    ids = verbatim(full, add_special_tokens=False)["input_ids"]
    assert verbatim.decode(ids) == full  # the tokens give the same bytes back


def test_verbatim_needs_chatml_tokens_and_the_config_knows_both(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from mbt_online.generation.backends import engine_kwargs
    from mbt_online.prompts import use_chat_template

    cfg = load_config(None, ["student.chat_template=verbatim"])
    assert engine_kwargs(cfg)["chat_template"] == "verbatim"
    with pytest.raises(ConfigError):
        load_config(None, ["student.chat_template=qwen"])
    gpt2_like = AutoTokenizer.from_pretrained(str(_plain_tokenizer(tmp_path)))
    with pytest.raises(ValueError, match="student.chat_template=model"):
        use_chat_template(gpt2_like, "verbatim")


def _plain_tokenizer(tmp_path: Path) -> Path:
    """A byte-level tokenizer without ChatML tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens(["hello"])
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(str(tmp_path / "plain"))
    return tmp_path / "plain"


def test_training_loads_the_tokenizer_with_the_chosen_template(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from mbt_online.prompts import VERBATIM_CHAT_TEMPLATE
    from mbt_online.training.steps import load_policy as _load_policy
    from mbt_online.training.trainer import TrlTrainer

    qwen_like = tmp_path / "qwen-like"
    shutil.copytree(tiny_model_dir, qwen_like)
    tok = AutoTokenizer.from_pretrained(str(qwen_like))
    tok.chat_template = QWEN3_STYLE
    tok.save_pretrained(str(qwen_like))
    assert _load_policy(qwen_like)[1].chat_template == QWEN3_STYLE
    assert _load_policy(qwen_like, "verbatim")[1].chat_template == VERBATIM_CHAT_TEMPLATE
    cfg = load_config(None, ["student.chat_template=verbatim"])
    trainer = TrlTrainer(cfg.train, chat_template=cfg.student.chat_template)
    assert trainer.chat_template == "verbatim"
