"""An offline HTML report over runs and sweeps: what the method did, round by round.

One module per section: `runs` (finding and reading runs, seed groups), `artifacts` (per-round
stage rows, training logs, stratified samples), `charts`, `tables`, `traces` (the browser) and
`page` (the self-contained HTML shell). It reads run directories (metrics.jsonl and the
per-round artifacts) and, for runs made elsewhere, a wandb offline run's `.wandb` record log
(`report.wandb_log`).
"""

from mbt_online.report.charts import REWARD_ORDER, curve_metrics, group_curves, run_colors
from mbt_online.report.page import render_html, write_report
from mbt_online.report.runs import (
    RunData,
    find_runs,
    merge_rounds,
    read_run_dir,
    read_wandb_runs,
    seed_groups,
)
from mbt_online.report.tables import (
    TABLE,
    render_config_diff,
    render_group_table,
    render_table,
)
from mbt_online.report.traces import render_traces, word_diff
from mbt_online.rundir.artifacts import (
    artifact_rounds,
    load_stage,
    read_train_log,
    stratified_sample,
)

__all__ = [
    "REWARD_ORDER",
    "TABLE",
    "RunData",
    "artifact_rounds",
    "curve_metrics",
    "find_runs",
    "group_curves",
    "load_stage",
    "merge_rounds",
    "read_run_dir",
    "read_train_log",
    "read_wandb_runs",
    "render_config_diff",
    "render_group_table",
    "render_html",
    "render_table",
    "render_traces",
    "run_colors",
    "seed_groups",
    "stratified_sample",
    "word_diff",
    "write_report",
]
