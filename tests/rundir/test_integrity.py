"""One writer per run, run integrity and portable runs, in seconds: the real `loop.train` with the
fake drivers of test_loop_flow, and small child processes that hold a run's lock.

Covered: a second writer (train --resume, judge, eval --save) refused at once naming the holder's
PID with nothing changed, and let in once the holder is SIGKILLed; a new run's state created
exclusively; a config cut short, a changed data file or package version and a damaged state.json
refused on resume, naming the file (and accepted with allow_changed); a run moved to another
folder, or resumed from another working directory, continuing to the same end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import STUDENT, Fakes, artifacts, quick_datasets, run, tiny_config
from paths import SAMPLES

from mbt_online import loop
from mbt_online.config import ConfigError, load_config
from mbt_online.evaluation import evaluate as evaluation
from mbt_online.rundir import integrity
from mbt_online.rundir.atomic import create_text_exclusive, write_dir_atomic
from mbt_online.rundir.lock import LOCK_FILE, RunLockedError, run_lock
from mbt_online.rundir.state import RunState

__all__ = ["quick_datasets"]  # the module-scoped fixture of test_loop_flow, autouse here too

HOTPOT = SAMPLES["hotpotqa"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished two-round run made with the fake drivers (a template: tests copy it)."""
    cfg = tiny_config(tmp_path_factory.mktemp("finished"))
    return run(cfg, Fakes(cfg))


def copy_run(src: Path, dest_parent: Path) -> Path:
    out = dest_parent / src.name
    shutil.copytree(src, out)
    return out


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbt_online", *args], capture_output=True, text=True, cwd=cwd
    )


# ---------------------------------------------------------------------------------------------
# one writer per run

HOLDER = """
import sys, time
from mbt_online.rundir.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """Start a child process that holds a run's lock until it is killed."""
    procs: list[subprocess.Popen] = []

    def start(run_dir: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def test_a_second_writer_is_refused_at_once_naming_the_holder(finished, tmp_path, holder):
    run_dir = copy_run(finished, tmp_path)
    state = json.loads((run_dir / "state.json").read_text())
    state["finished"] = False  # an unfinished run: a resume would write if it got in
    (run_dir / "state.json").write_text(json.dumps(state))
    before = snapshot(run_dir)
    proc = holder(run_dir)

    start = time.monotonic()
    with pytest.raises(RunLockedError, match=f"in use by process {proc.pid}"):
        loop.train(None, run_dir, resume=True, drivers=Fakes(tiny_config(tmp_path)).drivers)
    assert time.monotonic() - start < 1.0
    out = cli("train", "--resume", str(run_dir))
    assert out.returncode == 2 and f"process {proc.pid}" in out.stderr
    assert snapshot(run_dir) == before, "the refused writer changed nothing"

    proc.send_signal(signal.SIGKILL)  # the kernel drops a dead holder's lock: nothing stale
    proc.wait()
    fakes = Fakes(tiny_config(tmp_path))
    loop.train(None, run_dir, resume=True, drivers=fakes.drivers)
    assert json.loads((run_dir / "state.json").read_text())["finished"]
    assert (run_dir / LOCK_FILE).read_text() == "", "released on exit, no PID left behind"


def test_judge_and_eval_save_hold_the_lock(finished, tmp_path, holder):
    run_dir = copy_run(finished, tmp_path)
    proc = holder(run_dir)
    out = cli("judge", "--run", str(run_dir), "--round", "1")
    assert out.returncode == 2 and f"process {proc.pid}" in out.stderr
    with pytest.raises(RunLockedError):
        evaluation.evaluate_round(run_dir, 1, save=tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    # an evaluation that keeps nothing only reads the run: no lock needed
    from fakes import FakeGenerator

    answers = Fakes(tiny_config(tmp_path)).answers
    out = evaluation.evaluate_round(
        run_dir, 1, make_generator=lambda c, m: FakeGenerator(m, answers, [])
    )
    assert out["round"] == 1


def test_the_lock_is_reentrant_within_a_process_and_exclusive_across(tmp_path):
    with run_lock(tmp_path), run_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        take = "from mbt_online.rundir.lock import run_lock\n"
        child = take + f"run_lock({str(tmp_path)!r}).__enter__()"
        out = subprocess.run([sys.executable, "-c", child], capture_output=True)
        assert out.returncode != 0 and b"RunLockedError" in out.stderr
    out = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert out.returncode == 0


def test_a_writer_refused_before_the_holder_wrote_its_pid_still_names_it(tmp_path):
    """The holder writes its PID just after taking the lock: a process refused in that window
    waits for the PID instead of saying 'another process' (seen under a loaded machine)."""
    take = "import sys, time\nfrom mbt_online.rundir.lock import run_lock\n"
    child = take + f"with run_lock({str(tmp_path)!r}): sys.stdout.write('in\\n'); "
    child += "sys.stdout.flush(); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "in\n"
        (tmp_path / LOCK_FILE).write_text("")  # as between the holder's flock and its write
        threading.Timer(0.3, (tmp_path / LOCK_FILE).write_text, [f"{proc.pid}\n"]).start()
        with pytest.raises(RunLockedError, match=f"in use by process {proc.pid} "):
            run_lock(tmp_path).__enter__()
    finally:
        proc.kill()
        proc.wait()


def test_of_two_creators_of_a_state_exactly_one_wins(tmp_path):
    path, wins, losses = tmp_path / "state.json", [], []

    def create(i: int) -> None:
        try:
            create_text_exclusive(path, f"{i}\n")
            wins.append(i)
        except FileExistsError:
            losses.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert path.read_text() == f"{wins[0]}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_new_run_that_lost_the_race_changes_nothing(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "flow"
    run_dir.mkdir()
    (run_dir / "state.json").write_text('{"completed": []}\n')  # the winner's, after our check
    monkeypatch.setattr(loop, "_check_new_run", lambda *a: None)
    with pytest.raises(loop.RunExistsError):
        loop.prepare_run_dir(run_dir, cfg, resume=False)
    assert (run_dir / "state.json").read_text() == '{"completed": []}\n'


def test_two_writers_of_one_folder_never_share_a_temp_folder(tmp_path):
    """The inner write stands for another process filling the same output at the same time."""
    out = tmp_path / "stage"

    def outer(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "a").write_text("outer")
        write_dir_atomic(out, lambda t: (t.mkdir(), (t / "a").write_text("inner")))
        assert (tmp / "a").read_text() == "outer", "the other writer cleared our temp folder"

    write_dir_atomic(out, outer)
    assert (out / "a").read_text() == "outer"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_temp_folders_of_dead_writers_are_cleared_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_pid = int(dead.stdout)
    (tmp_path / f".stage.tmp-{dead_pid}-x").mkdir()
    (tmp_path / f".stage.tmp-{os.getppid()}-y").mkdir()
    write_dir_atomic(tmp_path / "stage", lambda t: t.mkdir())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f".stage.tmp-{os.getppid()}-y", "stage"])


def test_atomic_writes_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    from mbt_online.rundir import atomic

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    atomic.write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
    assert synced, "config.yaml and state.json must survive a power cut whole"


# ---------------------------------------------------------------------------------------------
# run integrity


def test_a_run_records_its_config_data_and_version(tmp_path):
    data = tmp_path / "hotpot.json"
    shutil.copy(HOTPOT, data)
    cfg = tiny_config(tmp_path, **{"data.train.dataset": "hotpotqa", "data.train.path": str(data)})
    run_dir = run(cfg, Fakes(cfg))
    record = json.loads((run_dir / "state.json").read_text())["integrity"]
    assert record["config_sha256"] == integrity.sha256_file(run_dir / "config.yaml")
    assert record["data_files"] == {
        "data.train.path": {
            "path": str(data),
            "size": data.stat().st_size,
            "sha256": integrity.sha256_file(data),
        }
    }
    assert record["package_version"] == integrity.package_version() != ""

    data.write_text(data.read_text().replace("the", "teh", 1))  # same name, other questions
    with pytest.raises(ConfigError, match=rf"data.train.path: {data} changed"):
        loop.train(None, run_dir, resume=True, drivers=Fakes(cfg).drivers)
    loop.train(None, run_dir, resume=True, allow_changed=True, drivers=Fakes(cfg).drivers)
    renewed = json.loads((run_dir / "state.json").read_text())["integrity"]
    assert renewed["data_files"]["data.train.path"]["sha256"] == integrity.sha256_file(data)
    loop.train(None, run_dir, resume=True, drivers=Fakes(cfg).drivers)  # the new record holds


def test_a_config_cut_short_is_refused_naming_it(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    config = run_dir / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(lines[: int(len(lines) * 0.6)]))
    before = snapshot(run_dir)
    out = cli("train", "--resume", str(run_dir))
    assert out.returncode == 2 and str(config) in out.stderr
    with pytest.raises(ConfigError, match="config.yaml changed"):
        loop.train(None, run_dir, resume=True, drivers=Fakes(tiny_config(tmp_path)).drivers)
    assert snapshot(run_dir) == before


def test_allow_changed_belongs_to_a_resume(tmp_path):
    out = cli("train", "--allow-changed", cwd=tmp_path)
    assert out.returncode == 2 and "--allow-changed" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_deliberate_config_change_needs_allow_changed(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("table_rows: 2", "table_rows: 3"))
    fakes = Fakes(tiny_config(tmp_path))
    with pytest.raises(ConfigError, match="--allow-changed"):
        loop.train(None, run_dir, resume=True, drivers=fakes.drivers)
    loop.train(None, run_dir, resume=True, allow_changed=True, drivers=fakes.drivers)
    state = RunState.load(run_dir)
    assert state.integrity and state.integrity["config_sha256"] == integrity.sha256_file(config)


def test_another_package_version_is_refused(finished, tmp_path, monkeypatch):
    run_dir = copy_run(finished, tmp_path)
    monkeypatch.setattr(integrity, "package_version", lambda: "99.0")
    with pytest.raises(ConfigError, match=r"state.json: the run started with mbt-online .* 99.0"):
        loop.train(None, run_dir, resume=True, drivers=Fakes(tiny_config(tmp_path)).drivers)


def test_extending_a_run_records_the_new_config(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    fakes = Fakes(tiny_config(tmp_path))
    loop.train(None, run_dir, resume=True, rounds=3, drivers=fakes.drivers)
    assert load_config(run_dir / "config.yaml").loop.rounds == 3
    assert [c[1] for c in fakes.of("teach")] == [3], "only the new round ran"
    loop.train(None, run_dir, resume=True, drivers=Fakes(tiny_config(tmp_path)).drivers)


BAD_STATES = {
    "a string for the list": {"completed": "round-1/rollout"},
    "an unknown stage": {"completed": ["round-1/rollouts"]},
    "a round that is no number": {"completed": [], "models": {"one": "m"}},
    "a non-bool finished": {"completed": [], "finished": "yes"},
    "an unknown key": {"completed": [], "done": True},
}


@pytest.mark.parametrize("case", [*BAD_STATES, "not JSON"])
def test_a_damaged_state_is_refused_naming_it(case, finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    state = run_dir / "state.json"
    state.write_text("{not json" if case == "not JSON" else json.dumps(BAD_STATES[case]))
    with pytest.raises(ConfigError, match=rf"resume: {state}: .*(not a JSON|schema)"):
        loop.train(None, run_dir, resume=True, drivers=Fakes(tiny_config(tmp_path)).drivers)
    out = cli("train", "--resume", str(run_dir))
    assert out.returncode == 2 and "state.json" in out.stderr


def test_a_run_from_before_the_record_still_resumes(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    state = json.loads((run_dir / "state.json").read_text())
    legacy = {k: state[k] for k in ("completed", "finished")}
    legacy["models"] = {r: str(run_dir / m) for r, m in state["models"].items()}  # absolute then
    (run_dir / "state.json").write_text(json.dumps(legacy))
    loop.train(None, run_dir, resume=True, drivers=Fakes(tiny_config(tmp_path)).drivers)
    assert "no integrity record" in (run_dir / "run.log").read_text()


# ---------------------------------------------------------------------------------------------
# portable runs


class CheckingFakes(Fakes):
    """Fakes that fail when handed a model folder that does not exist (as vLLM and TRL would)."""

    def drivers(self, cfg, run_dir):
        parts = super().drivers(cfg, run_dir)
        make_generator, make_trainer = parts.make_generator, parts.make_trainer

        def exists(model: str) -> str:
            assert model == STUDENT or Path(model).is_dir(), f"no model folder {model}"
            return model

        def checked_trainer():
            trainer = make_trainer()
            real = trainer.train
            trainer.train = lambda job: real(job) if exists(job.start_model) else None
            return trainer

        def checked_generator(model: str):
            gen = make_generator(exists(model))
            real = gen.handoff
            gen.handoff = lambda mode, m, a=None: real(mode, exists(m), a)
            return gen

        parts.make_generator, parts.make_trainer = checked_generator, checked_trainer
        return parts


def test_a_moved_run_resumed_from_another_directory_continues(tmp_path, monkeypatch):
    from fakes import Killed

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    cfg = tiny_config(Path("runs"))  # relative: as typed on a command line
    fakes = CheckingFakes(cfg)
    with monkeypatch.context() as mp:  # killed once round 1 trained, before its EVAL is marked
        mp.setattr(loop, "write_round_metrics", _dies_in_round(1))
        with pytest.raises(Killed):
            loop.train(cfg, drivers=fakes.drivers)
    state = json.loads((first / "runs" / "flow" / "state.json").read_text())
    assert state["models"] == {"1": "round-1/train/model"}, "relative to the run directory"

    moved = second / "elsewhere" / "flow"
    moved.parent.mkdir()
    shutil.move(first / "runs" / "flow", moved)
    monkeypatch.chdir(second)
    resumed = CheckingFakes(cfg)
    loop.train(None, Path("elsewhere/flow"), resume=True, drivers=resumed.drivers)
    assert [c[1] for c in resumed.of("train")] == ["round-1/train/model"]
    assert json.loads((moved / "state.json").read_text())["finished"]

    reference_cfg = tiny_config(tmp_path / "ref")
    reference = run(reference_cfg, Fakes(reference_cfg))
    assert artifacts(moved) == artifacts(reference)


def _dies_in_round(r: int):
    """`write_round_metrics` that dies on round `r`'s line (a kill mid-run, after round r-1)."""
    from fakes import Killed

    real = loop.write_round_metrics

    def dying(run_dir, metrics):
        if metrics["round"] == r:
            raise Killed("metrics")
        return real(run_dir, metrics)

    return dying


def test_an_external_model_is_kept_absolute(tmp_path):
    state = RunState(path=tmp_path / "run" / "state.json")
    state.path.parent.mkdir()
    state.models = {"1": str(tmp_path / "run" / "round-1" / "model"), "2": str(tmp_path / "ext")}
    state.save()
    raw = json.loads(state.path.read_text())["models"]
    assert raw == {"1": "round-1/model", "2": str(tmp_path / "ext")}
    assert RunState.load(state.path.parent).models == state.models


# ---------------------------------------------------------------------------------------------
# names that become paths


@pytest.mark.parametrize("name", ["../../x", "/abs/run", "", "a/b", "..", ".hidden", "x\n"])
def test_a_run_name_must_be_one_safe_path_component(name):
    with pytest.raises(ConfigError, match=r"run\.name: .*not a safe directory name"):
        load_config(None, [f"run.name={json.dumps(name)}"])


def test_a_safe_run_name_is_accepted():
    assert load_config(None, ["run.name=mbt-s_dpo+v1.2"]).run.name == "mbt-s_dpo+v1.2"
