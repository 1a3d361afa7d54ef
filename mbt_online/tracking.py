"""Run tracking: wandb (offline by default) plus the run's `run.log` and stage timings.

The local files (`run.log`, `metrics.jsonl` written by `rundir.metrics_file`, the stage folders and
each round's `train/log_history.jsonl`) are the source of truth (reports and resume read them);
wandb mirrors them so users get dashboards. Metric names are grouped by prefix: rollout/, reward/,
teacher/, train/, eval/, timing/; per-step TRL metrics are `train/sft/*`, `train/dpo/*` and
`train/grpo/*` against `train/global_step`, everything else is against `round`.

One wandb run per run directory: its id is kept in RUN/wandb_id.txt and every process resumes it.
wandb 0.31 in offline mode cannot append to an earlier process's `offline-run-*` folder: each
process opens a new one whose step counter starts again at 0 (wandb's own `sync` would then upload
the folders of one id one after another). So an offline Tracker rebuilds instead: it replaces the
run's earlier offline folders with one new folder that replays every finished round from the local
files, then goes on logging. `wandb sync RUN/wandb/wandb/offline-run-*` uploads one complete run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mbt_online.config import Config, to_flat_dict
from mbt_online.inert import InertFormatter, cell
from mbt_online.rundir.atomic import write_text_atomic
from mbt_online.rundir.metrics_file import read_metrics
from mbt_online.rundir.state import RunState

log = logging.getLogger("mbt_online")

LOG_FILE = "run.log"
TRACKING_OFF = (
    "the run goes on with wandb tracking off (run.log, metrics.jsonl and the round folders "
    "keep everything)"
)
WANDB_ID_FILE = "wandb_id.txt"
TRAIN_STEP = "train/global_step"
# per-step TRL keys: train/<stage>/<TRL key>
TRAIN_STAGES = ("sft", "dpo", "grpo")
# the completions table: what a reader filters on first, then the texts
TABLE_COLUMNS = (
    "round",
    "example_id",
    "benchmark",
    "tier",
    "correct",
    "tokens",
    "finish_reason",
    "truncated",
    "answer_inclusive",
    "reward",
)
TABLE_TEXTS = ("question", "answer", "predicted", "phases", "completion")


def setup_logging(run_dir: Path) -> None:
    """Log to the console and to RUN/run.log, so a finished run says what each stage did."""
    root = logging.getLogger("mbt_online")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_mbt_run_log", False):
            root.removeHandler(h)
            h.close()
    # one line per record, no escape sequence: a message may quote a reply or a data row
    fmt = InertFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    fh = logging.FileHandler(run_dir / LOG_FILE)
    fh.setFormatter(fmt)
    fh._mbt_run_log = True  # type: ignore[attr-defined]
    root.addHandler(fh)
    if not any(
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        for h in root.handlers
    ):
        sh = logging.StreamHandler()
        sh.setFormatter(fmt)
        root.addHandler(sh)


@contextmanager
def timed(stage: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a stage, record it as timing/<stage> and log how long it took."""
    start = time.perf_counter()
    log.info("stage %s: start", stage)
    yield
    seconds = time.perf_counter() - start
    timings[f"timing/{stage}"] = round(seconds, 3)
    log.info("stage %s: done in %.1fs", stage, seconds)


def completions_table(
    rows: list[dict[str, Any]], round_: int, n: int
) -> tuple[list[str], list[list[Any]]]:
    """(columns, data) of a round's completions: a stratified sample (benchmark x correct x finish
    reason) with each reward component in its own column, so wandb can filter and sort on them."""
    from mbt_online.rundir.artifacts import components, stratified_sample

    picked = stratified_sample(rows, n)
    comp_names = list(dict.fromkeys(k for r in picked for k in components(r)))
    columns = [*TABLE_COLUMNS, *[f"reward/{c}" for c in comp_names], *TABLE_TEXTS]
    data = []
    for r in picked:
        comps = components(r)
        values = {
            **r,
            "round": round_,
            "benchmark": r.get("source", ""),
            "phases": ", ".join(r.get("phases") or []),
            **{f"reward/{c}": comps.get(c) for c in comp_names},
        }
        data.append([_cell(values.get(c)) for c in columns])
    return columns, data


def _cell(v: Any) -> Any:
    return cell(v) if v is None or isinstance(v, int | float | str | bool) else json.dumps(v)


def wandb_dir_problem(wandb_dir: Path) -> str | None:
    """Why wandb could not write its folder (None when it can): wandb itself would fall back
    to the system's temp folder without a word, so the run's record would be elsewhere."""
    probe = wandb_dir / f".probe-{uuid.uuid4().hex[:8]}"
    try:
        wandb_dir.mkdir(exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)  # room for the run's first files, not just an entry
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return f"cannot write {wandb_dir} ({e.strerror or e})"
    finally:
        with suppress(OSError):
            probe.unlink(missing_ok=True)
    return None


class Tracker:
    """A thin wandb wrapper: one wandb run per run directory, whatever the number of processes."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.run = None
        self.defined: set[str] = set()
        if cfg.tracking.wandb_mode == "disabled":
            return
        problem = wandb_dir_problem(run_dir / "wandb")
        if problem:
            log.warning("wandb: %s; %s", problem, TRACKING_OFF)
            return
        import wandb

        wandb_dir = run_dir / "wandb"
        wandb_dir.mkdir(exist_ok=True)
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        write_text_atomic(id_file, run_id)
        offline = cfg.tracking.wandb_mode == "offline"
        if offline:
            for old in (wandb_dir / "wandb").glob(f"offline-run-*-{run_id}"):
                shutil.rmtree(old)  # replayed below from the run directory's own files
        self.run = wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity,
            group=cfg.tracking.group,
            tags=cfg.tracking.tags or None,
            name=cfg.run.name,
            id=run_id,
            resume="allow",
            mode=cfg.tracking.wandb_mode,
            dir=str(wandb_dir),
            config=to_flat_dict(cfg),
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run.define_metric("round")
        self.run.define_metric(TRAIN_STEP)
        for stage in TRAIN_STAGES:
            self.run.define_metric(f"train/{stage}/*", step_metric=TRAIN_STEP)
        if offline:
            self._replay()

    def _replay(self) -> None:
        """Log every round the run directory has finished (a resumed offline run's new folder)."""
        from mbt_online.rundir.artifacts import load_stage

        state = RunState.load(self.run_dir)
        for metrics in read_metrics(self.run_dir):
            r = int(metrics["round"])
            if state.done(r, "eval"):
                self.log_round(metrics, load_stage(self.run_dir, r, "eval"))

    def log_round(
        self, metrics: dict[str, Any], eval_rows: list[dict[str, Any]] | None = None
    ) -> None:
        """`_log_round`; a wandb folder that cannot be written (full, read-only) turns tracking
        off with one message, the run goes on."""
        try:
            self._log_round(metrics, eval_rows)
        except OSError as e:
            self._off(e)

    def _off(self, e: OSError) -> None:
        log.warning("wandb: cannot write its run (%s); %s", e, TRACKING_OFF)
        run, self.run = self.run, None
        with suppress(Exception):  # its folder is broken: nothing more to save
            run.finish(exit_code=1, quiet=True)

    def _log_round(
        self, metrics: dict[str, Any], eval_rows: list[dict[str, Any]] | None = None
    ) -> None:
        """The round's TRL steps (from its log_history.jsonl), then its metrics and completions."""
        if self.run is None:
            return
        import wandb

        r = int(metrics["round"])
        self._log_train_steps(r)
        payload = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for key in payload:
            if key not in self.defined and key != "round":
                self.run.define_metric(key, step_metric="round")  # exact: no glob to shadow
                self.defined.add(key)
        n = self.cfg.tracking.table_rows
        if eval_rows and n:
            columns, data = completions_table(eval_rows, r, n)
            payload["samples/completions"] = wandb.Table(columns=columns, data=data)
        self.run.log(payload)

    def _log_train_steps(self, r: int) -> None:
        from mbt_online.rundir.artifacts import global_steps

        for row in global_steps(self.run_dir, range(1, r + 1)):
            if row["round"] != r:
                continue
            stage = row["stage"]
            values = {
                f"train/{stage}/{k}": v
                for k, v in row.items()
                if k not in ("stage", "step", "round", "global_step")
                and isinstance(v, int | float)
                and not isinstance(v, bool)
            }
            if values:
                self.run.log({TRAIN_STEP: row["global_step"], **values})

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except OSError as e:
                log.warning("wandb: cannot finish its run (%s); %s", e, TRACKING_OFF)
            self.run = None
