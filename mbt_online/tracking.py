"""Run tracking: wandb (offline by default) plus the run's `run.log` and stage timings.

The local files (`run.log`, and `metrics.jsonl` written by `rundir.metrics_file`) are the source of
truth (reports and resume read them); wandb mirrors them so users get dashboards. Metric names are
grouped by prefix: rollout/, reward/, teacher/, train/, eval/, timing/.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mbt_online.config import Config, to_flat_dict
from mbt_online.rundir.atomic import write_text_atomic

log = logging.getLogger("mbt_online")

LOG_FILE = "run.log"


def setup_logging(run_dir: Path) -> None:
    """Log to the console and to RUN/run.log, so a finished run says what each stage did."""
    root = logging.getLogger("mbt_online")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_mbt_run_log", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
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


class Tracker:
    """A thin wandb wrapper: one run per training run, resumed with the same id after a crash."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg = cfg
        self.run = None
        if cfg.tracking.wandb_mode == "disabled":
            return
        import wandb

        wandb_dir = run_dir / "wandb"
        wandb_dir.mkdir(exist_ok=True)
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        write_text_atomic(id_file, run_id)
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
        self.run.define_metric("*", step_metric="round")

    def log_round(
        self, metrics: dict[str, Any], samples: list[dict[str, Any]] | None = None
    ) -> None:
        if self.run is None:
            return
        import wandb

        payload = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        if samples:
            columns = list(samples[0].keys())
            table = wandb.Table(columns=columns)
            for s in samples:
                table.add_data(
                    *[
                        s[c] if isinstance(s[c], int | float | str) else json.dumps(s[c])
                        for c in columns
                    ]
                )
            payload["samples/completions"] = table
        self.run.log(payload)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
