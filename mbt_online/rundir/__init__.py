"""The run directory: its state file, stage outputs, metrics file and the atomic writes under
them all."""

from mbt_online.rundir.atomic import (
    swap_dir,
    write_dir_atomic,
    write_json_atomic,
    write_text_atomic,
)
from mbt_online.rundir.metrics_file import METRICS_FILE, read_metrics, write_round_metrics
from mbt_online.rundir.stages import load_dataset_dir, load_rows, save_rows, stage_dir
from mbt_online.rundir.state import STATE_FILE, RunState

__all__ = [
    "METRICS_FILE",
    "STATE_FILE",
    "RunState",
    "load_dataset_dir",
    "load_rows",
    "read_metrics",
    "save_rows",
    "stage_dir",
    "swap_dir",
    "write_dir_atomic",
    "write_json_atomic",
    "write_round_metrics",
    "write_text_atomic",
]
