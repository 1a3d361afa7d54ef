"""HANDOFF's reading of the three modes, on an engine that only records what it was asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbt_online.generation.handoff import dispatch_handoff


class RecordingEngine:
    """The three calls `dispatch_handoff` may make, recorded in order; `load_weights` and
    `restart` move `model_path` as a real engine's would."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.calls: list[tuple[str, str]] = []

    def load_weights(self, model_dir: str) -> None:
        self.calls.append(("load_weights", model_dir))
        self.model_path = model_dir

    def restart(self, model_dir: str) -> None:
        self.calls.append(("restart", model_dir))
        self.model_path = model_dir

    def set_lora(self, adapter_dir: str) -> None:
        self.calls.append(("set_lora", adapter_dir))


def test_reload_loads_the_new_weights_in_place(tmp_path: Path):
    engine = RecordingEngine(str(tmp_path / "round-0"))
    dispatch_handoff(engine, "reload", str(tmp_path / "round-1"))
    assert engine.calls == [("load_weights", str(tmp_path / "round-1"))]


def test_reload_ignores_an_adapter(tmp_path: Path):
    engine = RecordingEngine(str(tmp_path / "base"))
    dispatch_handoff(engine, "reload", str(tmp_path / "new"), adapter_dir=str(tmp_path / "a"))
    assert engine.calls == [("load_weights", str(tmp_path / "new"))]


def test_restart_restarts_on_the_folder(tmp_path: Path):
    engine = RecordingEngine(str(tmp_path / "round-0"))
    dispatch_handoff(engine, "restart", str(tmp_path / "round-1"))
    assert engine.calls == [("restart", str(tmp_path / "round-1"))]


def test_lora_on_the_engines_own_base_only_sets_the_adapter(tmp_path: Path):
    base = tmp_path / "base"
    base.mkdir()
    engine = RecordingEngine(str(base))
    dispatch_handoff(engine, "lora", str(base), adapter_dir=str(tmp_path / "adapter-1"))
    assert engine.calls == [("set_lora", str(tmp_path / "adapter-1"))]


def test_lora_compares_resolved_paths_not_spellings(tmp_path: Path):
    """`base/.` and `sub/../base` name the engine's own weights: no reload."""
    base = tmp_path / "base"
    (tmp_path / "sub").mkdir()
    base.mkdir()
    engine = RecordingEngine(str(base))
    dispatch_handoff(engine, "lora", str(tmp_path / "sub" / ".." / "base"), adapter_dir="ad")
    dispatch_handoff(engine, "lora", f"{base}/.", adapter_dir="ad2")
    assert engine.calls == [("set_lora", "ad"), ("set_lora", "ad2")]


def test_lora_on_another_base_loads_it_first(tmp_path: Path):
    engine = RecordingEngine(str(tmp_path / "base-0"))
    dispatch_handoff(engine, "lora", str(tmp_path / "base-1"), adapter_dir=str(tmp_path / "a"))
    assert engine.calls == [
        ("load_weights", str(tmp_path / "base-1")),
        ("set_lora", str(tmp_path / "a")),
    ]
    # now the engine holds base-1: the next adapter on it needs no reload
    dispatch_handoff(engine, "lora", str(tmp_path / "base-1"), adapter_dir=str(tmp_path / "b"))
    assert engine.calls[2:] == [("set_lora", str(tmp_path / "b"))]


def test_lora_without_an_adapter_is_refused_before_any_call(tmp_path: Path):
    engine = RecordingEngine(str(tmp_path / "base-0"))
    with pytest.raises(ValueError, match="needs adapter_dir"):
        dispatch_handoff(engine, "lora", str(tmp_path / "base-1"))
    assert engine.calls == []


@pytest.mark.parametrize("mode", ["swap", "", "RELOAD"])
def test_an_unknown_mode_is_refused_naming_it(tmp_path: Path, mode: str):
    engine = RecordingEngine(str(tmp_path))
    with pytest.raises(ValueError, match=f"unknown handoff mode {mode!r}"):
        dispatch_handoff(engine, mode, str(tmp_path))  # type: ignore[arg-type]
    assert engine.calls == []
