"""A run's `state.json`: which stages are done, and which model each round ended with.

A stage marks itself done only after its output folder is in place, and the file is rewritten
atomically, so a run killed at any point resumes at the first unfinished stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mbt_online.rundir.atomic import write_json_atomic

STATE_FILE = "state.json"


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
