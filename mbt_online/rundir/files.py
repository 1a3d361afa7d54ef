"""On-disk run state and stage artifacts.

Every stage writes a `datasets` folder atomically (temp folder + rename) and only then marks itself
done in `state.json`, so a run killed at any point resumes at the first unfinished stage and never
reads a half-written artifact.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def stage_dir(run_dir: Path, round_: int, stage: str) -> Path:
    return run_dir / f"round-{round_}" / stage


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def save_rows(rows: list[dict[str, Any]], out: Path) -> Path:
    """Save rows as a `datasets` folder (load with `datasets.load_from_disk`), atomically."""
    from datasets import Dataset

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    Dataset.from_list(rows).save_to_disk(str(tmp)) if rows else _save_empty(tmp)
    replace_dir(tmp, out)
    return out


def _save_empty(tmp: Path) -> None:
    """An empty stage output (nothing failed, nothing to rewrite) is still a valid dataset."""
    from datasets import Dataset

    Dataset.from_dict({}).save_to_disk(str(tmp))


def load_dataset_dir(path: Path) -> Any:
    """`load_from_disk`, except that an empty stage output (no data files, which `datasets` cannot
    read back) is an empty Dataset."""
    from datasets import Dataset, load_from_disk

    state = Path(path) / "state.json"
    if state.exists() and not json.loads(state.read_text()).get("_data_files"):
        return Dataset.from_list([])
    return load_from_disk(str(path))


def load_rows(path: Path) -> list[dict[str, Any]]:
    return load_dataset_dir(path).to_list()


def replace_dir(tmp: Path, out: Path) -> None:
    """Swap a finished temp folder into place; a stale output from a killed attempt is dropped."""
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


@dataclass
class RunState:
    """Which stages are done, and which model each round ended with."""

    path: Path
    completed: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    finished: bool = False

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = run_dir / STATE_FILE
        if not path.exists():
            return cls(path=path)
        data = json.loads(path.read_text())
        return cls(
            path=path,
            completed=data.get("completed", []),
            models=data.get("models", {}),
            finished=data.get("finished", False),
        )

    def save(self) -> None:
        write_json_atomic(
            self.path,
            {"completed": self.completed, "models": self.models, "finished": self.finished},
        )

    def trained_rounds(self) -> list[int]:
        """Rounds that ended with a model, in order (JSON keeps the round numbers as strings)."""
        return sorted(int(r) for r in self.models)

    def done(self, round_: int, stage: str) -> bool:
        return f"round-{round_}/{stage}" in self.completed

    def mark(self, round_: int, stage: str) -> None:
        key = f"round-{round_}/{stage}"
        if key not in self.completed:
            self.completed.append(key)
        self.save()


def is_finished(run_dir: Path) -> bool:
    return RunState.load(Path(run_dir)).finished
