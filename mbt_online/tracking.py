"""Run tracking: wandb (offline by default) plus a local `metrics.jsonl` and `run.log`.

The local files are the source of truth (reports and resume read them); wandb mirrors them so users
get dashboards. Metric names are grouped by prefix:
rollout/, reward/, teacher/, train/, eval/, timing/.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mbt_online.config import Config, to_flat_dict

log = logging.getLogger("mbt_online")

METRICS_FILE = "metrics.jsonl"
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


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_round_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Replace-or-append this round's line atomically, so a resumed round never writes twice."""
    rows = [m for m in read_metrics(run_dir) if m.get("round") != metrics["round"]]
    rows.append(metrics)
    rows.sort(key=lambda m: m["round"])
    tmp = run_dir / (METRICS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in rows))
    os.replace(tmp, run_dir / METRICS_FILE)


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
        id_file.write_text(run_id)
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

    @property
    def run_path(self) -> str | None:
        return getattr(self.run, "dir", None) and str(Path(self.run.dir).parent)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
