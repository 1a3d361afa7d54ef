"""A run's `state.json`: which stages are done, which model each round ended with, and what the run
started from (its config's hash, its data files' fingerprints, the package and library versions).

A stage marks itself done only after its output folder is in place, and the file is rewritten
atomically, so a run killed at any point resumes at the first unfinished stage. The file is read
through a schema: a damaged or hand-edited state (`"completed": "round-1/rollout"`, a string where
a list belongs) is refused rather than read loosely, since a loose read can count stages as done.

Everything recorded is relative to the run directory: a model folder inside the run is stored as
a relative path and resolved against the run directory on load, so a run moved to another folder,
or resumed from another working directory, continues. Models outside the run (the cached bootstrap
student, a hub cache folder) stay absolute.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from mbt_online.rundir.atomic import create_text_exclusive, write_json_atomic

STATE_FILE = "state.json"
# the stages a round marks done, in order (`loop.Session`)
STAGES = ("rollout", "score", "teach", "build", "train", "grpo_rollout", "grpo", "eval")
GRPO_STAGES = ("grpo_rollout", "grpo")  # only in a run with train.grpo.enabled


def round_stages(grpo: bool) -> tuple[str, ...]:
    """The stages a round of a run marks, in order (GRPO's only where it is enabled)."""
    return STAGES if grpo else tuple(s for s in STAGES if s not in GRPO_STAGES)


# format 1 (no "format" key): model paths relative to the working directory of the first start;
# format 2: relative to the run directory
FORMAT = 2

StageKey = Annotated[StrictStr, Field(pattern=rf"^round-(0|[1-9][0-9]*)/({'|'.join(STAGES)})$")]
RoundKey = Annotated[StrictStr, Field(pattern=r"^(0|[1-9][0-9]*)$")]
Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fingerprint(_Strict):
    """A data file (or folder) as the run first read it: the path as the config wrote it."""

    path: StrictStr
    size: Annotated[StrictInt, Field(ge=0)]
    sha256: Sha256


class Integrity(_Strict):
    """What a run started from; `--resume` refuses when any of it changed."""

    config_sha256: Sha256
    data_files: dict[StrictStr, Fingerprint]
    package_version: StrictStr
    # torch, transformers, trl, ... as installed (null: not installed); absent in older runs
    library_versions: dict[StrictStr, StrictStr | None] | None = None
    # the changes a resume accepted with --allow-changed, oldest first
    accepted_changes: list[StrictStr] = Field(default_factory=list)


class StateSchema(_Strict):
    """The schema of `state.json`, checked on every load."""

    format: Annotated[StrictInt, Field(ge=1, le=FORMAT)] = 1
    completed: list[StageKey] = Field(default_factory=list)
    models: dict[RoundKey, StrictStr] = Field(default_factory=dict)
    finished: StrictBool = False
    integrity: Integrity | None = None


@dataclass
class RunState:
    """Which stages are done, which model each round ended with (absolute paths in memory), and
    the run's integrity record (None for a run started before one was kept)."""

    path: Path
    completed: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    integrity: dict[str, Any] | None = None

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        """The state of `run_dir` (an empty one when there is no state file yet); a file that is
        not JSON or fails the schema is a `StateError` naming it."""
        path = Path(run_dir) / STATE_FILE
        if not path.exists():
            return cls(path=path)
        data = _parse(path)
        base = Path(run_dir) if data.format >= 2 else Path.cwd()
        return cls(
            path=path,
            completed=list(data.completed),
            models={r: _absolute(m, base) for r, m in data.models.items()},
            finished=data.finished,
            integrity=data.integrity.model_dump() if data.integrity else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The file's content: model paths inside the run directory made relative to it."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "completed": self.completed,
            "models": {r: _relative(m, self.run_dir) for r, m in self.models.items()},
            "finished": self.finished,
        }
        if self.integrity is not None:
            out["integrity"] = self.integrity
        return out

    def save(self) -> None:
        write_json_atomic(self.path, self.to_json())

    def create(self) -> None:
        """Write the state of a new run, failing with `FileExistsError` when one exists: of two
        processes starting one run, exactly one creates it."""
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        create_text_exclusive(self.path, text)

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


def _parse(path: Path) -> StateSchema:
    from pydantic import ValidationError

    from mbt_online.rundir.integrity import StateError  # imports the config: not at module level

    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StateError(path, f"not a JSON file ({type(e).__name__}: {e})") from None
    try:
        return StateSchema.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise StateError(path, f"fails the state schema ({problems})") from None


def _relative(model: str, run_dir: Path) -> str:
    """A model folder inside the run directory as a path relative to it; any other as absolute."""
    path = Path(os.path.abspath(model))
    for root in {os.path.abspath(run_dir), os.path.realpath(run_dir)}:
        for candidate in (path, Path(os.path.realpath(path))):
            try:
                return candidate.relative_to(root).as_posix()
            except ValueError:
                continue
    return str(path)


def _absolute(model: str, base: Path) -> str:
    return model if os.path.isabs(model) else os.path.abspath(Path(base) / model)
