"""Stage outputs: each stage of a round writes one `datasets` folder, `RUN/round-<r>/<stage>`.

The folder is written beside its place and swapped in (`rundir.atomic`), and only then does the
stage mark itself done, so a resumed run never reads a half-written artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mbt_online.rundir.atomic import write_dir_atomic

# round-<r>/train/: one row per TRL log event (written by the trainer, read by report and wandb)
LOG_HISTORY = "log_history.jsonl"
# round-<r>/<train|grpo>/<step>/: one TRL step's own log_history, written when the step completes
STAGE_HISTORY = "log_history.json"


def stage_dir(run_dir: Path, round_: int, stage: str) -> Path:
    return run_dir / f"round-{round_}" / stage


def save_rows(rows: list[dict[str, Any]], out: Path) -> Path:
    """Save rows as a `datasets` folder (load with `datasets.load_from_disk`), atomically."""
    from datasets import Dataset

    def write(tmp: Path) -> None:
        # an empty stage output (nothing failed, nothing to rewrite) is still a valid dataset
        data = Dataset.from_list(rows) if rows else Dataset.from_dict({})
        data.save_to_disk(str(tmp))

    return write_dir_atomic(out, write)


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
