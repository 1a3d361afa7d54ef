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

TRAIN's steps reach wandb while TRAIN runs: the trainer (in this process or a staged child's rank
0) appends each TRL log event to a file in the job's folder (`rundir.live_steps`), and a thread of
this process tails it into the run. The child never opens wandb itself: two processes cannot write
one offline run (the child's own `resume` would open a second folder whose step counter starts at
0 again, and online the parent's and child's history rows would interleave), so the one process
that owns the run logs everything. A step logged live is not logged again from `log_history.jsonl`
when the round ends; online, the steps already sent are kept in RUN/wandb/streamed_steps.jsonl so
a resumed process does not send them twice.

Each round also logs: its completions into one incremental table (every round kept, in order),
its model folder and its BUILD data as artifacts by reference (`tracking.artifacts`), and the run
carries the library versions in its config, `job_type` (a sweep member's name without the seed
suffix) beside `group` (the sweep), and best-accuracy / lowest-degeneration summaries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mbt_online.config import Config, to_flat_dict
from mbt_online.contracts import Trained, Trainer, TrainJob
from mbt_online.inert import InertFormatter, cell
from mbt_online.rundir.atomic import write_text_atomic
from mbt_online.rundir.live_steps import LIVE_ENV, LiveReader, live_path
from mbt_online.rundir.metrics_file import read_metrics
from mbt_online.rundir.stages import STAGE_HISTORY, stage_dir
from mbt_online.rundir.state import RunState
from mbt_online.versions import library_versions

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
TABLE_KEY = "samples/completions"
# the run's summary keeps the best round besides the last
SUMMARIES = {
    "eval/accuracy": "max,last",
    "eval/em": "max,last",
    "eval/f1": "max,last",
    "eval/degeneration_rate": "min,last",
}
LIVE_POLL_S = 1.0  # how often the live TRAIN log is read
STREAMED_FILE = "streamed_steps.jsonl"  # RUN/wandb/: steps an online run already holds


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


def job_type(cfg: Config) -> str:
    """`tracking.job_type`, else the run's name without a replicate's seed suffix: the seed
    replicas of one sweep member share a job type inside the sweep's group."""
    from mbt_online.report.compare import group_of

    return cfg.tracking.job_type or group_of(cfg.run.name)


class Tracker:
    """A thin wandb wrapper: one wandb run per run directory, whatever the number of processes."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.run: Any = None
        self.defined: set[str] = set()
        self.table: Any = None  # the completions table, one increment per round
        self.streamed: set[tuple[int, str, int]] = set()  # (round, stage, step) logged live
        self.lock = threading.Lock()
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
        self.streamed_file = wandb_dir / STREAMED_FILE
        if offline:
            for old in (wandb_dir / "wandb").glob(f"offline-run-*-{run_id}"):
                shutil.rmtree(old)  # replayed below from the run directory's own files
            self.streamed_file.unlink(missing_ok=True)  # the new folder holds no step yet
        self.streamed = self._already_streamed()
        versions = {f"versions.{k}": v for k, v in library_versions().items()}
        self.run = wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity,
            group=cfg.tracking.group,
            job_type=job_type(cfg),
            tags=cfg.tracking.tags or None,
            name=cfg.run.name,
            id=run_id,
            resume="allow",
            mode=cfg.tracking.wandb_mode,
            dir=str(wandb_dir),
            config={**to_flat_dict(cfg), **versions},
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run.define_metric("round")
        self.run.define_metric(TRAIN_STEP)
        for stage in TRAIN_STAGES:
            self.run.define_metric(f"train/{stage}/*", step_metric=TRAIN_STEP)
        for key, summary in SUMMARIES.items():
            self.run.define_metric(key, step_metric="round", summary=summary)
            self.defined.add(key)
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
            payload[TABLE_KEY] = self._table_increment(*completions_table(eval_rows, r, n))
        self.run.log(payload)
        if r > 0 and self.cfg.tracking.artifacts != "none":
            self._log_artifacts(r)

    def _table_increment(self, columns: list[str], data: list[list[Any]]) -> Any:
        """The run's one completions table with this round's rows added: logged incrementally,
        so the UI keeps every round's rows. Its columns are the first round's (a column a later
        round lacks is left empty; one only it has is dropped)."""
        import wandb

        if self.table is None:
            self.table = wandb.Table(
                columns=columns, log_mode="INCREMENTAL", allow_mixed_types=True
            )
        index = {c: i for i, c in enumerate(columns)}
        for row in data:
            cells = [row[index[c]] if c in index else None for c in self.table.columns]
            self.table.add_data(*cells)
        return self.table

    def _log_artifacts(self, r: int) -> None:
        """The round's model folder (`model-<id>`) and BUILD data (`data-<id>`: sft, dpo and GRPO's
        samples), aliased `round-<r>`. By reference, nothing copied: a model is referenced by its
        files' paths (hashing a model's weights every round would cost minutes), data by content;
        `tracking.artifacts: upload` copies both into the artifacts."""
        import wandb

        model = RunState.load(self.run_dir).models.get(str(r))
        if model and Path(model).is_dir():
            art = wandb.Artifact(
                f"model-{self.run.id}", type="model", metadata={"round": r, "path": str(model)}
            )
            self._add(art, Path(model), None, checksum=False)
            self.run.log_artifact(art, aliases=[f"round-{r}"])
        build = stage_dir(self.run_dir, r, "build")
        folders = {
            "sft": build / "sft",
            "dpo": build / "dpo",
            "grpo": stage_dir(self.run_dir, r, "grpo") / "samples",
        }
        folders = {k: v for k, v in folders.items() if v.is_dir()}
        if folders:
            art = wandb.Artifact(
                f"data-{self.run.id}", type="dataset", metadata={"round": r, "parts": list(folders)}
            )
            for name, path in folders.items():
                self._add(art, path, name, checksum=True)
            self.run.log_artifact(art, aliases=[f"round-{r}"])

    def _add(self, art: Any, path: Path, name: str | None, checksum: bool) -> None:
        if self.cfg.tracking.artifacts == "upload":
            art.add_dir(str(path), name=name)
        else:
            art.add_reference(path.resolve().as_uri(), name=name, checksum=checksum)

    def _log_train_steps(self, r: int) -> None:
        """The round's TRL events from its log_history.jsonl, but those already logged live."""
        from mbt_online.rundir.artifacts import global_steps

        for row in global_steps(self.run_dir, range(1, r + 1)):
            if row["round"] == r and (r, row["stage"], int(row["step"])) not in self.streamed:
                self._log_step(row["stage"], row["global_step"], row)

    def _log_step(self, stage: str, global_step: int, row: dict[str, Any]) -> None:
        if self.run is None:  # tracking turned off meanwhile
            return
        values = {
            f"train/{stage}/{k}": v
            for k, v in row.items()
            if k not in ("stage", "step", "round", "global_step")
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        }
        if values:
            with self.lock:
                self.run.log({TRAIN_STEP: global_step, **values})

    def log_live_step(self, r: int, stage: str, global_step: int, row: dict[str, Any]) -> None:
        """One TRL event logged while TRAIN runs, remembered so the round's end skips it."""
        self._log_step(stage, global_step, row)
        key = (r, stage, int(row["step"]))
        self.streamed.add(key)
        if self.cfg.tracking.wandb_mode == "online":
            with open(self.streamed_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(list(key)) + "\n")

    def _already_streamed(self) -> set[tuple[int, str, int]]:
        out: set[tuple[int, str, int]] = set()
        if self.streamed_file.exists():
            for line in self.streamed_file.read_text().splitlines():
                try:
                    r, stage, step = json.loads(line)
                except (json.JSONDecodeError, ValueError, TypeError):
                    continue  # a torn last line
                out.add((int(r), str(stage), int(step)))
        return out

    def streamed_trainer(self, r: int, trainer: Trainer) -> Trainer:
        """`trainer`, its TRL steps reaching wandb as they happen while it trains."""
        return trainer if self.run is None else LiveTrainer(self, r, trainer)

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except OSError as e:
                log.warning("wandb: cannot finish its run (%s); %s", e, TRACKING_OFF)
            self.run = None


class LiveTrainer:
    """A `Trainer` whose TRAIN job's steps are logged while it trains (`TrainStream`)."""

    def __init__(self, tracker: Tracker, r: int, trainer: Trainer) -> None:
        self.tracker, self.r, self.trainer = tracker, r, trainer

    def train(self, job: TrainJob) -> Trained:
        with TrainStream(self.tracker, self.r, Path(job.out_dir)).running():
            return self.trainer.train(job)


class TrainStream:
    """A TRAIN job's live log files (`live_<stage>.jsonl`) tailed into the run while it trains.

    Events of one step (TRL's end-of-stage summary shares the last step) are merged into one
    point, as `rundir.artifacts.global_steps` merges them, so an event is logged once the next
    step's arrives or the job ends: the live history equals the replayed one, point for point."""

    def __init__(self, tracker: Tracker, r: int, job_dir: Path) -> None:
        self.tracker, self.r, self.job_dir = tracker, r, job_dir.absolute()
        self.readers = {s: LiveReader(live_path(self.job_dir, s)) for s in TRAIN_STAGES}
        self.pending: dict[str, Any] | None = None
        self.last: dict[str, int] = {}  # the last step each stage streamed
        self.offsets: dict[str, int] = {}

    @contextmanager
    def running(self) -> Iterator[None]:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        for stage in TRAIN_STAGES:  # a killed attempt's events are not this one's
            live_path(self.job_dir, stage).unlink(missing_ok=True)
        previous = os.environ.get(LIVE_ENV)
        os.environ[LIVE_ENV] = str(self.job_dir)  # the trainer (and a staged child) writes there
        done = threading.Event()
        thread = threading.Thread(target=self._follow, args=(done,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            if previous is None:
                os.environ.pop(LIVE_ENV, None)
            else:
                os.environ[LIVE_ENV] = previous
            self._safely(self.poll, self.flush)

    def _follow(self, done: threading.Event) -> None:
        while not done.wait(LIVE_POLL_S):
            if not self._safely(self.poll):
                return

    def _safely(self, *steps: Any) -> bool:
        """wandb trouble never stops TRAIN: the steps not streamed are logged at the round end."""
        try:
            for step in steps:
                step()
        except Exception as e:  # noqa: BLE001
            log.warning("wandb: streaming TRAIN's steps stopped (%s); the round's end logs them", e)
            return False
        return True

    def poll(self) -> None:
        for stage in TRAIN_STAGES:  # SFT, DPO then GRPO: the order they run in
            for row in self.readers[stage].new_rows():
                step = int(row.get("step") or 0)
                if self.pending is not None and (
                    self.pending["stage"] != stage or self.pending["step"] != step
                ):
                    self.flush()
                if self.pending is None:
                    self.pending = {"stage": stage, "step": step}
                self.pending.update({k: v for k, v in row.items() if k not in ("stage", "step")})

    def flush(self) -> None:
        row, self.pending = self.pending, None
        if row is None:
            return
        stage, step = row["stage"], row["step"]
        self.last[stage] = max(self.last.get(stage, 0), step)
        self.tracker.log_live_step(self.r, stage, self._offset(stage) + step, row)

    def _offset(self, stage: str) -> int:
        """Where the stage's steps start on the run's step axis: every earlier round's steps, then
        this round's earlier stages' (`rundir.artifacts.global_steps`' counting)."""
        if stage not in self.offsets:
            from mbt_online.rundir.artifacts import steps_before

            earlier = TRAIN_STAGES[: TRAIN_STAGES.index(stage)]
            self.offsets[stage] = steps_before(self.tracker.run_dir, self.r) + sum(
                self._steps_of(s) for s in earlier
            )
        return self.offsets[stage]

    def _steps_of(self, stage: str) -> int:
        """A finished stage's last step of this round: streamed here, else its own history."""
        from mbt_online.rundir.artifacts import last_step, read_train_log

        if stage in self.last:
            return self.last[stage]
        folder = stage_dir(self.tracker.run_dir, self.r, "grpo" if stage == "grpo" else "train")
        own = folder / stage / STAGE_HISTORY
        if own.exists():
            rows = [{"stage": stage, **h} for h in json.loads(own.read_text())]
            return last_step(rows, stage)
        return last_step(read_train_log(self.tracker.run_dir, self.r), stage)
