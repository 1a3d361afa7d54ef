"""The run's `metrics.jsonl`: one JSON line per round, the source of truth for reports and resume.

One reader and one writer, used by the loop, the judges, the CLI and the report alike, so they
agree on what a damaged file means: a torn last line (a writer killed mid-line, e.g. an older
non-atomic writer) is skipped with a warning; a bad line before the end is corruption and an error,
since rewriting the file around it would silently drop a round.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mbt_online.rundir.atomic import write_text_atomic

log = logging.getLogger("mbt_online")

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every round's line of RUN/metrics.jsonl in file order ([] when there is none yet)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    rows = []
    for i, line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i != lines[-1][0]:
                raise ValueError(f"{path}:{i}: not a JSON line ({e}); the file is corrupt") from e
            log.warning("%s:%d: skipping a torn last line (%d chars)", path, i, len(line))
    return rows


def write_round_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Replace-or-append this round's line atomically, so a resumed round never writes twice."""
    rows = [m for m in read_metrics(run_dir) if m.get("round") != metrics["round"]]
    rows.append(metrics)
    rows.sort(key=lambda m: m["round"])
    text = "".join(json.dumps(m, sort_keys=True) + "\n" for m in rows)
    write_text_atomic(Path(run_dir) / METRICS_FILE, text)
