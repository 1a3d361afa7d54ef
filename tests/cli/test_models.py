"""`models fetch`: which names it takes, what it prints, and its exit codes (fetching stubbed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mbt_online.cli.common import app
from mbt_online.cli.models import models_fetch
from mbt_online.models.pretrained import ModelFetchError


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch, tmp_path) -> list[tuple[str, bool]]:
    calls: list[tuple[str, bool]] = []

    def fetch_any(name: str, *, force: bool = False):
        calls.append((name, force))
        if name == "Org/Broken":
            raise ModelFetchError("Org/Broken: offline and not in the hub cache", "offline")
        return tmp_path / name.replace("/", "--")

    monkeypatch.setattr("mbt_online.models.pretrained.fetch_any", fetch_any)
    return calls


def test_a_known_model_prints_its_folder(fetched, tmp_path, capsys):
    models_fetch("smollm2-135m-instruct", force=True)
    assert fetched == [("smollm2-135m-instruct", True)]
    assert capsys.readouterr().out.strip() == str(tmp_path / "smollm2-135m-instruct")


def test_a_hub_id_is_fetched_through_the_command(fetched, tmp_path):
    res = CliRunner().invoke(app, ["models", "fetch", "Qwen/Qwen3-0.6B"])
    assert res.exit_code == 0, res.output
    assert fetched == [("Qwen/Qwen3-0.6B", False)]
    assert str(tmp_path / "Qwen--Qwen3-0.6B") in res.output


def test_an_unknown_name_is_refused_before_fetching(fetched):
    res = CliRunner().invoke(app, ["models", "fetch", "not-a-model"])
    assert res.exit_code == 2 and fetched == []
    assert "unknown model 'not-a-model'; known: smollm2-135m-instruct" in res.output


def test_a_failed_fetch_exits_1_with_the_reason(fetched):
    res = CliRunner().invoke(app, ["models", "fetch", "Org/Broken"])
    assert res.exit_code == 1
    assert "offline and not in the hub cache" in " ".join(res.output.split())


def test_help_names_the_argument_and_force():
    res = CliRunner().invoke(app, ["models", "fetch", "--help"])
    assert res.exit_code == 0 and "--force" in res.output
    assert "(smollm2-135m-instruct)" in res.output and "(Qwen/Qwen3-0.6B)" in res.output
