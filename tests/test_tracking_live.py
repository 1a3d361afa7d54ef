"""The wandb mirror as its users expect it: TRAIN's steps logged while TRAIN runs (in this process
and from a staged child), every round's completions kept, models and data as artifacts, library
versions, group and job type, summaries. Real wandb in offline mode, its run file read back."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import ROUNDS, Fakes, FakeTrainer, tiny_config
from tracking_runs import DPO_STEPS, SFT_STEPS, LoggingFakes, offline_config

from mbt_online.contracts import Trained
from mbt_online.report.wandb_log import read_wandb_file, wandb_records
from mbt_online.rundir.live_steps import LIVE_ENV, LiveReader, append_step, live_dir, live_path
from mbt_online.rundir.metrics_file import read_metrics
from mbt_online.tracking import Tracker, job_type
from mbt_online.training import staged
from mbt_online.training.staged import StagedTrainer
from mbt_online.versions import LIBRARIES, library_versions

# wandb writes an offline run's `.wandb` file every 15 s (x_transaction_log_flush_interval)
FLUSH_WAIT_S = 60


def wandb_file(run_dir: Path) -> Path:
    run_id = (run_dir / "wandb_id.txt").read_text()
    [folder] = (run_dir / "wandb" / "wandb").glob(f"offline-run-*-{run_id}")
    return next(folder.glob("run-*.wandb"))


def records(path: Path, kind: str) -> list:
    """One kind of record, once wandb has written its exit record."""
    deadline = time.monotonic() + 30
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
        assert time.monotonic() < deadline, f"{path}: wandb never wrote its exit record"
        time.sleep(0.1)
    return [getattr(r, kind) for r in wandb_records(path) if r.WhichOneof("record_type") == kind]


def sft_points(history: list[dict]) -> list[tuple[int, float]]:
    return [(h["train/global_step"], h["train/sft/loss"]) for h in history if "train/sft/loss" in h]


def wait_for_points(run_dir: Path, n: int) -> tuple[list, float]:
    """Poll the live run's `.wandb` file until it holds n SFT points: (the points, seconds)."""
    start = time.monotonic()
    while True:
        path = wandb_file(run_dir)
        points = sft_points(read_wandb_file(path)[1])
        if len(points) >= n or time.monotonic() - start > FLUSH_WAIT_S:
            return points, time.monotonic() - start
        time.sleep(0.5)


def train_rows() -> list[dict]:
    """What a TRAIN of the fakes logs: SFT_STEPS SFT steps, DPO_STEPS DPO steps, TRL's summary."""
    rows = [{"stage": "sft", "step": s, "loss": 2.0 / s} for s in range(1, SFT_STEPS + 1)]
    rows += [
        {"stage": "dpo", "step": s, "loss": 0.7 / s, "rewards/margins": 0.1 * s}
        for s in range(1, DPO_STEPS + 1)
    ]
    rows.append({"stage": "dpo", "step": DPO_STEPS, "train_runtime": 0.5, "train_loss": 0.4})
    return rows


def check_history_once(run_dir: Path) -> list[dict]:
    """The finished run: every step once, merged as the replay merges them, on one axis."""
    path = wandb_file(run_dir)
    records(path, "exit")
    _, history = read_wandb_file(path)
    steps = [h["train/global_step"] for h in history if "train/global_step" in h]
    per_round = SFT_STEPS + DPO_STEPS
    assert steps == list(range(1, ROUNDS * per_round + 1))  # nothing logged twice
    assert len(sft_points(history)) == ROUNDS * SFT_STEPS
    summary = [h for h in history if "train/dpo/train_runtime" in h]
    assert [h["train/dpo/rewards/margins"] for h in summary] == pytest.approx([0.3] * ROUNDS)
    rounds = [h for h in history if "round" in h]
    assert [h["eval/accuracy"] for h in rounds] == [
        m["eval/accuracy"] for m in read_metrics(run_dir)
    ]
    return history


# ---------------------------------------------------------------------------------------------
# the live file


def test_live_reader_takes_complete_lines_and_the_callback_writes_on_rank_zero(tmp_path):
    from mbt_online.training.history import LiveLog

    path = live_path(tmp_path, "sft")
    reader = LiveReader(path)
    assert reader.new_rows() == []  # no file yet
    callback = LiveLog("sft", tmp_path)
    callback.on_log(
        None, SimpleNamespace(global_step=1, is_world_process_zero=True), None, {"loss": 2}
    )
    callback.on_log(
        None, SimpleNamespace(global_step=2, is_world_process_zero=False), None, {"loss": 1}
    )
    with open(path, "a") as f:
        f.write('{"stage": "sft", "step": 3, "lo')  # a line being written
    assert reader.new_rows() == [{"stage": "sft", "step": 1, "loss": 2}]
    with open(path, "a") as f:
        f.write('ss": 0.5}\n')
    append_step(path, {"stage": "sft", "step": 4, "loss": 0.25})
    assert [r["step"] for r in reader.new_rows()] == [3, 4]
    assert reader.new_rows() == []


def test_nobody_watching_means_no_live_file(monkeypatch):
    monkeypatch.delenv(LIVE_ENV, raising=False)
    assert live_dir() is None


# ---------------------------------------------------------------------------------------------
# TRAIN's steps while TRAIN runs


class LiveTrainer(FakeTrainer):
    """An in-process trainer writing its events through TRL's callback as TRL would, then, in the
    last round, reading the run's wandb file back before it returns: TRAIN is still running."""

    def __init__(self, calls, run_dir: Path, seen: list):
        super().__init__(calls)
        self.run_dir, self.seen = run_dir, seen

    def train(self, job):
        from mbt_online.training.history import LiveLog

        trained = super().train(job)
        rows, watched = train_rows(), live_dir()
        assert watched == Path(job.out_dir).absolute()
        for row in rows:
            state = SimpleNamespace(global_step=row["step"], is_world_process_zero=True)
            logs = {k: v for k, v in row.items() if k not in ("stage", "step")}
            LiveLog(row["stage"], watched).on_log(None, state, None, logs)
        if job.out_dir.parent.name == f"round-{ROUNDS}":
            self.seen.append(wait_for_points(self.run_dir, ROUNDS * SFT_STEPS))
        (job.out_dir / "log_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return trained


def test_in_process_train_steps_reach_wandb_while_train_runs(tmp_path):
    cfg = offline_config(tmp_path)
    fakes, seen = Fakes(cfg), []
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name

    def drivers(cfg, run_dir_):
        d = Fakes.drivers(fakes, cfg, run_dir_)
        d.make_trainer = lambda: LiveTrainer(fakes.calls, run_dir, seen)
        return d

    from mbt_online import loop

    loop.train(cfg, run_dir, drivers=drivers)
    [(points, _)] = seen
    # read back inside the last round's TRAIN: its SFT steps follow the earlier round's
    assert len(points) == ROUNDS * SFT_STEPS
    per_round = SFT_STEPS + DPO_STEPS
    assert [s for s, _ in points[-SFT_STEPS:]] == [
        (ROUNDS - 1) * per_round + s for s in range(1, SFT_STEPS + 1)
    ]
    assert points[-1][1] == pytest.approx(2.0 / SFT_STEPS)
    assert LIVE_ENV not in os.environ  # the watch ends with TRAIN
    check_history_once(run_dir)


def test_staged_child_steps_reach_wandb_before_the_round_ends(tmp_path, monkeypatch):
    """The real StagedTrainer launches a child (accelerate's command replaced by a small program
    that speaks the same files); the child writes its events, then reads the parent's offline run
    back while it is still TRAIN, before exiting."""
    script = tmp_path / "child.py"
    script.write_text(CHILD_PROGRAM)
    monkeypatch.setattr(
        staged,
        "trainer_command",
        lambda cfg, job_file, world: [sys.executable, str(script), str(job_file)],
    )
    cfg = offline_config(tmp_path / "runs")
    fakes = LoggingFakes(cfg)
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name

    def drivers(cfg, run_dir_):
        d = Fakes.drivers(fakes, cfg, run_dir_)
        d.make_trainer = lambda: StagedTrainer(cfg, run_dir_)
        return d

    from mbt_online import loop

    loop.train(cfg, run_dir, drivers=drivers)
    seen = json.loads((run_dir / f"round-{ROUNDS}" / "train" / "seen.json").read_text())
    per_round = SFT_STEPS + DPO_STEPS
    assert len(seen["points"]) == ROUNDS * SFT_STEPS, seen
    assert [s for s, _ in seen["points"][-SFT_STEPS:]] == [
        (ROUNDS - 1) * per_round + s for s in range(1, SFT_STEPS + 1)
    ]
    assert seen["metrics_lines"] == ROUNDS  # rounds 0 .. ROUNDS-1: the last round not yet ended
    check_history_once(run_dir)


CHILD_PROGRAM = f"""
import json, sys, time
from pathlib import Path

from mbt_online.contracts import Trained
from mbt_online.report.wandb_log import read_wandb_file
from mbt_online.rundir.live_steps import append_step, live_dir, live_path
from mbt_online.rundir.metrics_file import read_metrics
from mbt_online.training.staged import write_result

SFT_STEPS, DPO_STEPS, ROUNDS = {SFT_STEPS}, {DPO_STEPS}, {ROUNDS}
job = json.loads(Path(sys.argv[1]).read_text())
out, run_dir = Path(job["out_dir"]), Path(job["run_dir"])
rows = [{{"stage": "sft", "step": s, "loss": 2.0 / s}} for s in range(1, SFT_STEPS + 1)]
rows += [{{"stage": "dpo", "step": s, "loss": 0.7 / s, "rewards/margins": 0.1 * s}}
         for s in range(1, DPO_STEPS + 1)]
rows.append({{"stage": "dpo", "step": DPO_STEPS, "train_runtime": 0.5, "train_loss": 0.4}})
watched = live_dir()
assert watched == out, (watched, out)
for row in rows:
    append_step(live_path(watched, row["stage"]), row)
if out.parent.name == f"round-{{ROUNDS}}":
    run_id = (run_dir / "wandb_id.txt").read_text()
    start = time.monotonic()
    while True:
        path = next((run_dir / "wandb" / "wandb").glob(f"offline-run-*-{{run_id}}/run-*.wandb"))
        history = read_wandb_file(path)[1]
        points = [(h["train/global_step"], h["train/sft/loss"])
                  for h in history if "train/sft/loss" in h]
        if len(points) >= ROUNDS * SFT_STEPS or time.monotonic() - start > {FLUSH_WAIT_S}:
            break
        time.sleep(0.5)
    seen = {{"points": points, "metrics_lines": len(read_metrics(run_dir))}}
    (out / "seen.json").write_text(json.dumps(seen))
(out / "log_history.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
(out / "model").mkdir(exist_ok=True)
trained = Trained(model=str(out / "model"), adapter=None, metrics={{"train/sft_loss": 0.4}})
write_result(out, trained)
"""


# ---------------------------------------------------------------------------------------------
# what each round leaves in the run


def test_offline_run_holds_every_round_table_artifacts_versions_and_summaries(tmp_path):
    cfg = tiny_config(
        tmp_path,
        **{
            "run.name": "mbt-r-s1",
            "tracking.wandb_mode": "offline",
            "tracking.group": "paper",
        },
    )
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    from fakes import run

    run(cfg, LoggingFakes(cfg))
    path = wandb_file(run_dir)
    folder = path.parent
    [info] = records(path, "run")
    assert (info.run_group, info.job_type) == ("paper", "mbt-r")
    # every round's completions: one increment each, each file that round's rows
    _, history = read_wandb_file(path)
    rounds = [h for h in history if "round" in h]
    seen_rounds = set()
    for h in rounds:
        assert h["samples/completions/_type"] == "incremental-table-file"
        table = json.loads((folder / "files" / h["samples/completions/path"]).read_text())
        seen_rounds |= {row[table["columns"].index("round")] for row in table["data"]}
        assert len(table["data"]) == cfg.tracking.table_rows
    assert seen_rounds == set(range(ROUNDS + 1))
    # each trained round's model and data, by reference, aliased by round
    arts = records(path, "artifact")
    models = [a for a in arts if a.type == "model"]
    data = [a for a in arts if a.type == "dataset"]
    run_id = info.run_id
    assert {a.name for a in models} == {f"model-{run_id}"}

    def round_of(artifact) -> int:
        [alias] = [a for a in artifact.aliases if a.startswith("round-")]
        return int(alias.removeprefix("round-"))

    assert [round_of(a) for a in models] == list(range(1, ROUNDS + 1))
    for a in data:
        r = round_of(a)
        refs = {e.path.split("/")[0]: e.ref for e in a.manifest.contents}
        assert set(refs) == {"sft", "dpo"}
        build = (run_dir / f"round-{r}" / "build").resolve()
        assert refs["sft"].startswith((build / "sft").as_uri() + "/")
        assert refs["dpo"].startswith((build / "dpo").as_uri() + "/")
    assert len(data) == ROUNDS and {a.name for a in data} == {f"data-{run_id}"}
    for a in models:
        assert all(e.ref.startswith("file://") for e in a.manifest.contents)
    # library versions in the config
    config = read_wandb_file(path)[0]["config"]
    versions = library_versions()
    assert set(LIBRARIES) <= {k.removeprefix("versions.") for k in config}
    assert config["versions.torch"] == versions["torch"] and versions["torch"]
    assert config["versions.wandb"] == versions["wandb"] and versions["trl"]
    # the best round is kept in the summary
    metrics = {m.name: m for m in records(path, "metric") if m.name}
    assert metrics["eval/accuracy"].summary.max and metrics["eval/accuracy"].summary.last
    assert metrics["eval/degeneration_rate"].summary.min
    assert metrics["eval/accuracy"].step_metric == "round"


def test_seed_replicas_share_group_and_job_type_and_upload_copies(tmp_path):
    """Two replicas of one sweep member: one group, one job type. With artifacts: upload the
    files are in the artifact, not referenced."""
    from mbt_online.config import load_config

    infos = []
    for seed in (1, 2):
        cfg = load_config(
            None,
            [
                f"run.name=mbt-r-s{seed}",
                "tracking.wandb_mode=offline",
                "tracking.group=paper-seeds",
                "tracking.artifacts=upload",
            ],
        )
        assert job_type(cfg) == "mbt-r"
        run_dir = tmp_path / cfg.run.name
        (run_dir / "round-1" / "build" / "sft").mkdir(parents=True)
        (run_dir / "round-1" / "build" / "sft" / "rows.arrow").write_text("rows")
        tracker = Tracker(cfg, run_dir)
        tracker.log_round({"round": 1, "eval/accuracy": 0.5})
        tracker.finish()
        path = wandb_file(run_dir)
        [info] = records(path, "run")
        infos.append((info.run_group, info.job_type))
        [data] = [a for a in records(path, "artifact") if a.type == "dataset"]
        [entry] = data.manifest.contents
        assert entry.path == "sft/rows.arrow" and not entry.ref  # copied, not referenced
    assert infos == [("paper-seeds", "mbt-r")] * 2
    named = load_config(None, ["run.name=x-s3", "tracking.job_type=ablation"])
    assert job_type(named) == "ablation"


def test_no_artifacts_when_none(tmp_path):
    cfg = tiny_config(tmp_path, **{"tracking.wandb_mode": "offline", "tracking.artifacts": "none"})
    from fakes import run

    run_dir = run(cfg, LoggingFakes(cfg))
    types = {a.type for a in records(wandb_file(run_dir), "artifact")}
    assert types == {"wandb-run-incremental-table"}


def test_trained_round_result_unchanged_by_watching(tmp_path):
    """The watch hands the trainer's result back as it was."""
    cfg = offline_config(tmp_path)
    tracker = Tracker(cfg, tmp_path)

    class Plain:
        def train(self, job):
            return Trained(model="m", adapter=None, metrics={"train/x": 1.0})

    job = SimpleNamespace(out_dir=tmp_path / "round-1" / "train")
    assert tracker.streamed_trainer(1, Plain()).train(job) == Trained("m", None, {"train/x": 1.0})
    tracker.finish()
