"""`eval`, `teach` and `judge` as a user types them: `--seeds` parsing and the refusals each
command makes before it loads anything."""

from __future__ import annotations

import pytest
import typer
from paths import SAMPLES
from typer.testing import CliRunner

from mbt_online.cli.common import app
from mbt_online.cli.stages import parse_seeds


@pytest.mark.parametrize(
    ("text", "seeds"),
    [(None, None), ("0", [0]), ("0,1,2", [0, 1, 2]), (" 3 , -1 ,", [3, -1]), ("10,2", [10, 2])],
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", ",", "a,b", "1.5", "1;2", "1,1", "2, 2"])
def test_bad_seeds_exit_2(text, capsys):
    with pytest.raises(typer.Exit) as err:
        parse_seeds(text)
    assert err.value.exit_code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "--seeds:" in message
    assert ("seeds repeat" in message) == (text in ("1,1", "2, 2"))


def invoke(*args: str):
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, " ".join(res.output.split())


def test_eval_refuses_a_dataset_without_a_path_and_bad_seeds(tmp_path):
    code, out = invoke("eval", "--run", str(tmp_path), "--dataset", "hotpotqa")
    assert code == 2 and "--dataset and --path go together" in out
    code, out = invoke("eval", "--run", str(tmp_path), "--seeds", "1,1")
    assert code == 2 and "--seeds: seeds repeat in '1,1'" in out
    code, out = invoke("eval", "--run", str(tmp_path), "--distractors", "some")
    assert code == 2 and "--distractors: expected a count or 'all'" in out


def test_teach_refuses_an_unknown_mode_teacher_or_missing_drafts(tmp_path):
    base = ["teach", "--dataset", "hotpotqa", "--path", str(SAMPLES["hotpotqa"])]
    code, out = invoke(*base, "--out", str(tmp_path / "o"), "--mode", "mbt-x")
    assert code == 2 and "--mode must be mbt-s or mbt-r (got 'mbt-x')" in out
    code, out = invoke(*base, "--out", str(tmp_path / "o"), "--teacher", "openai")
    assert code == 2 and "LLM teachers run inside `train`" in out
    code, out = invoke(*base, "--out", str(tmp_path / "o"), "--mode", "mbt-r")
    assert code == 2 and "pass --drafts" in out
    assert not (tmp_path / "o").exists()


def test_judge_refuses_unknown_judges_and_a_missing_run(tmp_path):
    code, out = invoke("judge", "--run", str(tmp_path), "--round", "0", "--judges", "rrp,vibes")
    assert (
        code == 2 and "--judges: unknown vibes; allowed: correctness, answer_hit, rrp, mqi" in out
    )
    code, out = invoke("judge", "--run", str(tmp_path / "none"), "--round", "0")
    assert code == 2 and "is not a run directory" in out


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("eval", ("--run", "--round", "--seeds", "--samples", "--distractors", "--save")),
        ("teach", ("--dataset", "--path", "--out", "--mode", "--drafts", "--limit")),
        ("judge", ("--run", "--round", "--judges", "--json")),
    ],
)
def test_help_names_the_options(command, options):
    res = CliRunner().invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert all(o in res.output for o in options), res.output
