"""Data files with each kind of malformed row, through `mbt-online data inspect` in a process of
its own: non-UTF-8 bytes, JSON nested past the parser's depth, fields of the wrong type (an
integer `answer_aliases`, a list-valued `idx`, a 5,000-digit number), an absurdly large row and a
repeated id. The command never crashes: it exits 0, every good row loads, and every row is either
loaded or counted as skipped.

The file is five good rows of the shipped MuSiQue sample (JSON lines) plus the bad ones; the
per-loader cases are unit-tested in tests/test_tasks.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from paths import SAMPLES

GOOD = 5


def good_rows() -> list[dict]:
    lines = SAMPLES["musique"].read_text().splitlines()[:GOOD]
    return [json.loads(line) for line in lines]


def wrong_types(rows: list[dict]) -> list[bytes]:
    aliases = {**rows[0], "id": "2hop__int_aliases", "answer_aliases": 5}
    idx = {**rows[1], "id": "2hop__list_idx"}
    idx["paragraphs"] = [{**p, "idx": [p["idx"]]} for p in idx["paragraphs"]]
    digits = json.dumps({**rows[2], "id": "2hop__digits"}).replace(
        '"answerable": true', '"answerable": true, "n": ' + "9" * 5000
    )
    assert "9" * 5000 in digits
    return [json.dumps(aliases).encode(), json.dumps(idx).encode(), digits.encode()]


def huge(rows: list[dict]) -> list[bytes]:
    row = {**rows[0], "id": "2hop__huge"}
    first, *rest = row["paragraphs"]  # a well-formed row, but for its size
    row["paragraphs"] = [{**first, "paragraph_text": "word " * 10_000_000}, *rest]
    return [json.dumps(row).encode()]


# case -> (the bad lines added to the good ones, how many of them must be skipped (None: each
# is loaded or skipped, the loader's choice), a word the skip reason must contain)
CASES: dict[str, tuple[Callable[[list[dict]], list[bytes]], int | None, str]] = {
    "bad bytes": (lambda rows: [b'{"id": "2hop__x", "question": "\xff\xfe\x80"}'], 1, ""),
    "deep nesting": (lambda rows: [b'{"id": "2hop__deep", "paragraphs": ' + b"[" * 100_000], 1, ""),
    "wrong types": (wrong_types, None, ""),
    "huge row": (huge, 1, ""),  # 50 MB: past any per-row cap
    "duplicate id": (lambda rows: [json.dumps(rows[0]).encode()], 1, "dup"),
}


def inspect(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbt_online", "data", "inspect"]
        + ["--dataset", "musique", "--path", str(path), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "2000"},
        timeout=120,
    )


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_row_is_skipped_and_counted_never_a_crash(case, tmp_path):
    bad_lines, skipped, reason = CASES[case]
    rows = good_rows()
    bad = bad_lines(rows)
    path = tmp_path / "musique.jsonl"
    lines = (
        [json.dumps(r).encode() for r in rows[:2]]
        + bad
        + [json.dumps(r).encode() for r in rows[2:]]
    )
    path.write_bytes(b"\n".join(lines) + b"\n")

    out = inspect(path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["total"] == GOOD + len(bad)
    assert summary["loaded"] + summary["skipped"] == summary["total"], "every row accounted for"
    assert summary["loaded"] >= GOOD, "the good rows all load"
    assert sum(summary["skipped_reasons"].values()) == summary["skipped"]
    if skipped is not None:
        assert summary["skipped"] == skipped, summary["skipped_reasons"]
    if reason:
        assert any(reason in k for k in summary["skipped_reasons"]), summary["skipped_reasons"]
