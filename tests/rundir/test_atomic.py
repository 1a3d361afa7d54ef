"""The run directory's shared pieces: atomic writes and folder swaps, and the cache root."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mbt_online.models.cache import cache_root
from mbt_online.rundir.atomic import swap_dir, write_dir_atomic, write_json_atomic


def test_atomic_json_leaves_no_temp_file(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [2]})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_folder_swap_replaces_a_stale_output(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    (out / "old").mkdir(parents=True)
    write_dir_atomic(out, lambda tmp: (tmp.mkdir(), (tmp / "new").write_text("x")))
    assert [p.name for p in out.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]  # no temp or set-aside folder left


def test_folder_swap_keeps_a_complete_folder_of_another_process(tmp_path: Path) -> None:
    out, ours = tmp_path / "cache", tmp_path / "ours"
    (out / "done").mkdir(parents=True)
    ours.mkdir()
    assert swap_dir(ours, out, keep_theirs=lambda f: (f / "done").exists()) == out
    assert (out / "done").exists() and not ours.exists()


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MBT_ONLINE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "mbt-online"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mbt-online"
    monkeypatch.setenv("MBT_ONLINE_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_atomic_files_get_the_mode_open_would_give_not_mkstemps_0600(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        written = write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o640  # 0666 less the umask: group can read
