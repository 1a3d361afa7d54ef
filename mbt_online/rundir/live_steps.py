"""TRAIN's log events while TRAIN runs: the file contract between the trainer (in this process or a
staged child's rank 0) and the wandb mirror, which tails it.

While the tracker watches a TRAIN job it sets `MBT_LIVE_STEPS` to the job's folder (a staged child
inherits it with the rest of the environment); the trainer then appends each TRL log event, as it
happens, to `<job folder>/live_<stage>.jsonl`, one `{"stage", "step", <TRL keys>}` line per event
(the rows of `log_history.jsonl`). Without the variable nothing is written. A reader takes only
complete lines, so a line being written is read on the next look.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LIVE_ENV = "MBT_LIVE_STEPS"


def live_path(job_dir: Path, stage: str) -> Path:
    return Path(job_dir) / f"live_{stage}.jsonl"


def live_dir() -> Path | None:
    """Where this process's TRAIN appends its events, or None when nobody watches."""
    value = os.environ.get(LIVE_ENV)
    return Path(value) if value else None


def append_step(path: Path, row: dict[str, Any]) -> None:
    """One event, written and flushed as one line (the reader never sees half of it as whole)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=float) + "\n")
        f.flush()


class LiveReader:
    """The complete lines added to a file since the last look."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = Path(path), 0

    def new_rows(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows
