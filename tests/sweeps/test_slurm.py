"""SLURM without a cluster: the job arrays a sweep emits (resources, requeue, multi-node TRAIN,
environment), the config errors of `slurm:` blocks, stop requests at the loop's safe points, the
`sweep-member` command and `sweep status`. The real-cluster checks are in test_slurm_cluster.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sweeps
import yaml
from fakes import Fakes, artifacts, run, tiny_config
from sweeps import write_sweep
from typer.testing import CliRunner

from mbt_online import preemption
from mbt_online.cli import app
from mbt_online.config import ConfigError, load_config
from mbt_online.rundir import read_metrics
from mbt_online.rundir.lock import run_lock
from mbt_online.sweeps.local import run_sweep
from mbt_online.sweeps.slurm import ARRAYS_FILE, JOBS_FILE, SUBMIT_SCRIPT
from mbt_online.sweeps.spec import expand
from mbt_online.sweeps.status import sweep_status

# ---------------------------------------------------------------------------------------------
# emitted scripts

fake_loop = sweeps.fake_loop  # the stand-in for mbt_online.loop (a fixture)


def stand_in(tmp_path: Path) -> Path:
    """A `mbt-online` that prints the environment the script set and the arguments it got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    vars_ = ("HF_HOME", "HF_HUB_OFFLINE", "WANDB_MODE", "OMP_NUM_THREADS", "SETUP_RAN")
    body = "".join(f'echo "{v}=${{{v}:-}}"\n' for v in vars_)
    (bin_dir / "mbt-online").write_text(f'#!/bin/bash\n{body}printf "%s\\n" "$@"\n')
    (bin_dir / "mbt-online").chmod(0o755)
    return bin_dir


def run_task(script: Path, bin_dir: Path, task: int, job: int = 1000) -> list[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_JOB_ID": str(job),
        "SLURM_JOB_ID": str(job + task),
        "SLURM_CPUS_PER_TASK": "6",
    }
    for key in ("OMP_NUM_THREADS", "HF_HOME", "HF_HUB_OFFLINE", "WANDB_MODE"):
        env.pop(key, None)
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def cluster_sweep(tmp_path: Path) -> Path:
    """A CPU member, a one-node GPU member and a two-node member, resources from three levels."""
    return write_sweep(
        tmp_path,
        {
            "name": "cl",
            "grid": {"student.model": {"small": "bootstrap", "big": "bootstrap"}},
            "members": [
                {"name": "cpu", "grid": {}, "slurm": {"cpus_per_task": 2}},
                {"name": "gpu"},
            ],
            "slurm": {
                "partition": "batch",
                "time": "02:00:00",
                "gpus_per_node": 1,
                "labels": {"big": {"nodes": 2, "gpus_per_node": 4, "sbatch": {"exclusive": True}}},
                "env": {"HF_HOME": "/scratch/hf cache", "HF_HUB_OFFLINE": 1},
                "setup": ["export SETUP_RAN=1"],
                "signal_seconds": 120,
                "max_parallel": 3,
            },
        },
        base={
            "loop": {"rounds": 1},
            "tracking": {"wandb_mode": "disabled"},
            "runtime": {"accelerate_config": "accelerate/ddp"},
        },
    )


def emit(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    submit = run_sweep(cluster_sweep(tmp_path), tmp_path / "out", [], emit="slurm")
    arrays = json.loads((submit.parent / ARRAYS_FILE).read_text())
    return submit, {a["script"]: a["members"] for a in arrays}


def test_one_array_per_resource_set_and_a_submit_script(tmp_path):
    submit, arrays = emit(tmp_path)
    out = submit.parent
    assert submit == out / SUBMIT_SCRIPT
    assert arrays == {
        "sweep-0.sbatch": ["cpu"],
        "sweep-1.sbatch": ["gpu_small"],
        "sweep-2.sbatch": ["gpu_big"],
    }
    for script in [submit, *(out / s for s in arrays)]:
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    # submit.sh with a stand-in sbatch (id 500, 501, ...; ";cluster" as --parsable may add)
    bin_dir = tmp_path / "sbin"
    bin_dir.mkdir()
    fake = 'echo "$2" >> "$SEEN"; n=$(wc -l < "$SEEN"); echo "$((499 + n));mbt"'
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\n[ -z "$FAIL" ] || exit 1\n{fake}\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SEEN": str(tmp_path / "seen")}
    res = subprocess.run(["bash", str(submit)], env=env, capture_output=True, text=True)
    assert res.stdout.splitlines() == [
        "500 sweep-0.sbatch",
        "501 sweep-1.sbatch",
        "502 sweep-2.sbatch",
    ]
    assert (tmp_path / "seen").read_text().split() == [str(out / s) for s in arrays]
    refused = subprocess.run(["bash", str(submit)], env={**env, "FAIL": "1"}, capture_output=True)
    assert refused.returncode != 0 and refused.stdout == b""
    sbatch = {
        name: [line for line in (out / name).read_text().splitlines() if line.startswith("#SBATCH")]
        for name in arrays
    }
    common = [
        "#SBATCH --job-name=mbt-cl",
        "#SBATCH --array=0-0%3",
        f"#SBATCH --output={out}/slurm/%x-%A_%a.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
    ]
    assert sbatch["sweep-0.sbatch"] == [
        *common,
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=2",  # the member's own block over the sweep's
        "#SBATCH --time=02:00:00",
        "#SBATCH --partition=batch",
    ]
    assert sbatch["sweep-1.sbatch"] == [
        *common,
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=02:00:00",
        "#SBATCH --partition=batch",
    ]
    assert sbatch["sweep-2.sbatch"] == [
        *common,
        "#SBATCH --nodes=2",  # from the grid label `big`
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=02:00:00",
        "#SBATCH --partition=batch",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --exclusive",
    ]


def member_args(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    assert lines[0].startswith("member ")  # the script's own line: which task, on which node
    env = dict(line.split("=", 1) for line in lines[1:6])
    return env, lines[6:]


def train_line(args: list[str]) -> str:
    """The TRAIN launch the member's config makes (what the staged trainer runs on the node)."""
    from mbt_online.training.staged import World, display, trainer_command

    assert args[0] == "sweep-member" and args[2] == "--config"
    cfg = load_config(args[3], args[4:])
    return display(trainer_command(cfg, "job.json", World.from_runtime(cfg.runtime)))


def test_gpu_member_gets_its_own_rendezvous_port_and_the_sweeps_environment(tmp_path):
    submit, _ = emit(tmp_path)
    out, bin_dir = submit.parent, stand_in(tmp_path)
    env, args = member_args(run_task(out / "sweep-1.sbatch", bin_dir, 0, job=1000))
    assert env == {
        "HF_HOME": "/scratch/hf cache",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "6",  # the task's CPUs
        "SETUP_RAN": "1",
    }
    assert args[:4] == [
        "sweep-member",
        str(out / "gpu_small"),
        "--config",
        str(tmp_path / "base.yaml"),
    ]
    assert f'run.runs_dir="{out}"' in args and 'run.name="gpu_small"' in args
    assert "runtime.main_process_port=30500" in args  # 29500 + job id 1000
    assert not any(a.startswith("runtime.launcher") for a in args)  # one node: a local launch
    assert not any(a.startswith("engine.backend") for a in args)  # sampled in-process
    line = train_line(args)
    assert not line.startswith("srun") and " launch " in line
    assert "--num_machines 1" in line and "--main_process_port 30500" in line
    # another task of the same array on the same node: another port
    _, other = member_args(run_task(out / "sweep-1.sbatch", bin_dir, 0, job=1001))
    assert "runtime.main_process_port=30501" in other


def test_two_node_member_trains_across_nodes_under_srun(tmp_path):
    submit, _ = emit(tmp_path)
    out, bin_dir = submit.parent, stand_in(tmp_path)
    _, args = member_args(run_task(out / "sweep-2.sbatch", bin_dir, 0, job=41234))
    assert args[1] == str(out / "gpu_big")
    for item in (
        'runtime.mode="staged"',
        'runtime.launcher="srun"',
        "runtime.num_machines=2",
        "runtime.num_processes=4",
        f"runtime.main_process_port={29500 + 41234 % 20000}",
        'engine.backend="vllm-serve"',  # the student sampled by one `vllm serve` per node
    ):
        assert item in args
    line = train_line(args)
    assert line.startswith("srun --nodes 2 --ntasks-per-node 1 ")
    assert " launch " in line and "--num_processes 8" in line and "--num_machines 2" in line
    assert '--machine_rank "$SLURM_NODEID"' in line
    assert f"--main_process_port {29500 + 41234 % 20000}" in line
    _, again = member_args(run_task(out / "sweep-2.sbatch", bin_dir, 0, job=41235))
    assert f"runtime.main_process_port={29500 + 41235 % 20000}" in again
    # the servers: one srun step, one task per node, each node's log its own, and a port of the
    # serve range (50000 + 4 x (job id % 2500) + slot) apart from the rendezvous port
    line, urls = serve_line(args, 41234, ["n1", "n2"])
    port = 50000 + 4 * (41234 % 2500)
    assert port == 54936 and port != 29500 + 41234 % 20000
    assert line.startswith(
        "srun --nodes 2 --ntasks 2 --ntasks-per-node 1 --overlap --nodelist n1,n2 "
        "--output LOGS/serve-0-%N.log --open-mode append "
        f"{sys.executable} -m vllm.entrypoints.openai.api_server --model MODEL "
        f"--served-model-name student --host 0.0.0.0 --port {port} --dtype float32 "
    )
    assert urls == [f"http://n1:{port}", f"http://n2:{port}"]
    _, next_job = serve_line(again, 41235, ["n1", "n2"])
    assert next_job == [f"http://n1:{port + 4}", f"http://n2:{port + 4}"]


def serve_line(args: list[str], job: int, hosts: list[str]) -> tuple[str, list[str]]:
    """The `vllm serve` step the member's config starts (slot 0) and the servers' URLs."""
    from mbt_online.generation.vllm_servers import launch_plan, serve_spec, srun_port
    from mbt_online.training.staged import display

    cfg = load_config(args[3], args[4:])
    assert cfg.engine.backend == "vllm-serve"
    plan = launch_plan(serve_spec(cfg), "MODEL", Path("LOGS"), 0, hosts, srun_port(job, 0))
    return display(plan.argv), plan.urls


def test_unknown_task_is_an_error(tmp_path):
    submit, _ = emit(tmp_path)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "9", "SLURM_JOB_ID": "5"}
    bad = subprocess.run(
        ["bash", str(submit.parent / "sweep-0.sbatch")], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "no sweep member for task 9" in bad.stderr


# ---------------------------------------------------------------------------------------------
# config errors


@pytest.mark.parametrize(
    ("slurm", "message"),
    [
        ({"sbatch": {"partition": "gpu\necho hi"}}, "slurm.sbatch.partition: the value"),
        ({"sbatch": {"x; rm": "1"}}, "'x; rm' is not a SLURM option name"),
        ({"sbatch": {"comment": "a\rb"}}, "holds a carriage return"),
        ({"partition": "gpu\x00"}, "slurm.partition: the value 'gpu\\x00' holds a NUL"),
        ({"env": {"HF_HOME": "/x\nrm -rf /"}}, "slurm.env.HF_HOME: the value"),
        ({"env": {"A B": "1"}}, "'A B' is not an environment variable name"),
        ({"setup": ["ok", "a\nb"]}, "slurm.setup[1]: the value"),
        ({"sbatch": {"array": "0-9"}}, "slurm.sbatch.array: set by the sweep"),
        ({"nodes": 0}, "slurm.nodes: expected a whole number >= 1"),
        ({"gpu": 1}, "unknown keys ['gpu']"),
        ({"labels": {"nope": {"nodes": 2}}}, "slurm.labels: no grid value is labelled ['nope']"),
    ],
)
def test_bad_slurm_blocks_are_config_errors_naming_the_key(tmp_path, slurm, message):
    path = write_sweep(tmp_path, {"grid": {"loop.rounds": [1, 2]}, "slurm": slurm})
    with pytest.raises(ConfigError) as err:
        expand(path)
    assert message in str(err.value)


def test_bad_member_slurm_block_names_the_member(tmp_path):
    path = write_sweep(tmp_path, {"members": [{"name": "a", "slurm": {"sbatch": {"Bad_Key": 1}}}]})
    with pytest.raises(ConfigError, match=r"members\[0\]\.slurm\.sbatch: 'Bad_Key' is not"):
        expand(path)


def test_the_cli_reports_the_config_error(tmp_path):
    path = write_sweep(tmp_path, {"slurm": {"sbatch": {"partition": "gpu\necho hi"}}})
    res = CliRunner().invoke(app, ["sweep", str(path), "--emit", "slurm"])
    assert res.exit_code == 2 and "slurm.sbatch.partition" in res.output


# ---------------------------------------------------------------------------------------------
# stop requests: the loop stops at its next safe point, the resume ends like an uninterrupted run


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    cfg = tiny_config(tmp_path_factory.mktemp("clean"))
    return artifacts(run(cfg, Fakes(cfg)))


def signal_during(monkeypatch, target: object, method: str, nth: int) -> None:
    """Deliver a real SIGUSR1 to this process during the nth call of target.method."""
    original, calls = getattr(target, method), []

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(target, method, wrapped)


@pytest.mark.parametrize(
    ("where", "nth", "stopped_before"),
    [("generate", 2, "round 1 score"), ("train", 1, "round 1 eval")],
)
def test_a_stop_signal_ends_the_run_at_a_safe_point_and_resume_matches(
    where, nth, stopped_before, clean, tmp_path, monkeypatch
):
    from fakes import FakeGenerator, FakeTrainer

    cfg = tiny_config(tmp_path)
    target = FakeGenerator if where == "generate" else FakeTrainer
    with monkeypatch.context() as mp:
        signal_during(
            mp, target, where, nth
        )  # generate call 1: round 0's eval; 2: round 1's rollout
        with preemption.handling(), pytest.raises(preemption.Preempted) as stop:
            run(cfg, Fakes(cfg))
    assert stop.value.where == stopped_before and stop.value.signal_name == "SIGUSR1"
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    state = json.loads((run_dir / "state.json").read_text())
    stage = stopped_before.split()[-1]
    assert f"round-1/{stage}" not in state["completed"] and not state["finished"]
    previous = {"score": "rollout", "eval": "train"}[stage]
    assert f"round-1/{previous}" in state["completed"]  # the stage in flight finished first
    assert [m["round"] for m in read_metrics(run_dir)] == [0]
    resumed = Fakes(cfg)
    run(cfg, resumed, resume=True)
    assert artifacts(run_dir) == clean
    # nothing finished before the stop is done again: round 1 trains again only if it had not
    assert len(resumed.of("train")) == (2 if where == "generate" else 1)


def test_a_term_stops_at_once_and_a_second_during_clean_up_ends_the_process():
    script = (
        "import os, signal, time\n"
        "from mbt_online import preemption\n"
        "with preemption.handling():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "        print('not stopped')\n"
        "    except preemption.Interrupted as e:\n"
        "        print('interrupted', e.signal_name, flush=True)\n"
        "        os.kill(os.getpid(), signal.SIGTERM)  # clean-up, cut short\n"
        "        time.sleep(5)\n"
        "        print('survived')\n"
    )
    res = subprocess.run([".venv/bin/python", "-c", script], capture_output=True, text=True)
    assert res.stdout.split("\n")[0] == "interrupted SIGTERM" and "survived" not in res.stdout
    assert res.returncode == preemption.PREEMPTED_EXIT
    assert "at once (a second SIGTERM)" in res.stderr.strip().splitlines()[-1]


def test_handlers_are_restored_after_the_block():
    before = signal.getsignal(signal.SIGUSR1)
    with preemption.handling():
        assert signal.getsignal(signal.SIGUSR1) is not before
    assert signal.getsignal(signal.SIGUSR1) is before and preemption.requested() is None


# ---------------------------------------------------------------------------------------------
# sweep-member: the array task's command, the same skip / resume / refuse as a local sweep


def test_sweep_member_skips_resumes_and_refuses_like_a_local_sweep(tmp_path, fake_loop):
    path = write_sweep(
        tmp_path, {"name": "s", "members": [{"name": "a"}]}, base={"loop": {"rounds": 2}}
    )
    out = tmp_path / "out"
    run_sweep(path, out, [], emit="slurm")
    args = [
        "sweep-member",
        str(out / "a"),
        "--config",
        str(tmp_path / "base.yaml"),
        *expand(path)[0].overrides,
        f'run.runs_dir="{out}"',
    ]
    fake = fake_loop(fail_member="a")
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code != 0  # killed in round 0
    assert runner.invoke(app, args).exit_code == 0
    assert fake.calls == [("a", False), ("a", True)]
    assert runner.invoke(app, args).exit_code == 0 and len(fake.calls) == 2  # finished: skipped
    drift = runner.invoke(app, [*args, "loop.rounds=1"])
    assert drift.exit_code == 2 and "loop.rounds: 2 there, 1 now" in drift.output
    assert len(fake.calls) == 2


def test_a_requeued_task_with_another_port_is_not_config_drift(tmp_path, fake_loop):
    """The rendezvous port is per task (a resubmission gets new job ids): not part of the run."""
    from mbt_online.sweeps.local import check_same_config

    path = write_sweep(tmp_path, {"members": [{"name": "a"}]}, base={"loop": {"rounds": 1}})
    out = tmp_path / "out"
    (member,) = expand(path)
    base = str(tmp_path / "base.yaml")
    fake = fake_loop(fail_member="a")
    args = ["sweep-member", str(out / "a"), "--config", base, *member.overrides]
    assert CliRunner().invoke(app, [*args, "runtime.main_process_port=30500"]).exit_code != 0
    res = CliRunner().invoke(app, [*args, "runtime.main_process_port=31234"])
    assert res.exit_code == 0, res.output
    assert fake.calls == [("a", False), ("a", True)]
    # the rest of runtime is how the run trains: a change there is drift like any other
    cfg = load_config(base, [*member.overrides, "runtime.launcher=srun"])
    with pytest.raises(ConfigError, match="runtime.launcher: 'local' there, 'srun' now"):
        check_same_config(out / "a", cfg)


def test_train_exits_3_when_preempted(tmp_path, monkeypatch):
    from mbt_online import loop

    def train(cfg, run_dir=None, resume=False, **_):
        os.kill(os.getpid(), signal.SIGUSR1)  # what the batch script forwards
        preemption.check("round 0")

    monkeypatch.setattr(loop, "train", train)
    res = CliRunner().invoke(app, ["train", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 3 and "stopped on SIGUSR1 before round 0" in res.output


def test_sweep_member_exits_3_when_preempted(tmp_path, monkeypatch):
    import sys
    import types

    def train(cfg, run_dir=None, resume=False):
        preemption.request("SIGUSR1")
        preemption.check("round 1 score")

    monkeypatch.setitem(sys.modules, "mbt_online.loop", types.SimpleNamespace(train=train))
    (tmp_path / "base.yaml").write_text("loop: {rounds: 1}\n")
    res = CliRunner().invoke(
        app, ["sweep-member", str(tmp_path / "m"), "--config", str(tmp_path / "base.yaml")]
    )
    assert res.exit_code == preemption.PREEMPTED_EXIT == 3
    assert "stopped on SIGUSR1 before round 1 score" in res.output


# ---------------------------------------------------------------------------------------------
# sweep status


def test_sweep_status_reports_finished_running_and_unstarted(tmp_path, fake_loop):
    path = write_sweep(
        tmp_path,
        {"name": "st", "members": [{"name": "done"}, {"name": "busy"}, {"name": "later"}]},
        base={"loop": {"rounds": 1}, "tracking": {"wandb_mode": "disabled"}},
    )
    out = tmp_path / "out"
    run_sweep(path, out, [], emit="slurm")
    done, busy = out / "done", out / "busy"
    for run_dir, completed, finished in [
        (
            done,
            [
                "round-0/eval",
                "round-1/rollout",
                "round-1/score",
                "round-1/teach",
                "round-1/build",
                "round-1/train",
                "round-1/eval",
            ],
            True,
        ),
        (busy, ["round-0/eval", "round-1/rollout"], False),
    ]:
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"loop": {"rounds": 1}}))
        (run_dir / "state.json").write_text(
            json.dumps({"format": 2, "completed": completed, "finished": finished, "models": {}})
        )
    (done / "metrics.jsonl").write_text(
        '{"round": 0, "eval/accuracy": 0.25}\n{"round": 1, "eval/accuracy": 0.5, "x": 1}\n'
    )
    with run_lock(busy):
        status = sweep_status(out)
        res = CliRunner().invoke(app, ["sweep", "status", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == status
    assert status["sweep"] == "st"
    assert [(m["name"], m["state"], m["round"], m["stage"]) for m in status["members"]] == [
        ("done", "finished", 1, "eval"),
        ("busy", "running", 1, "score"),
        ("later", "not_started", None, None),
    ]
    assert status["members"][0]["last_eval"] == {"round": 1, "eval/accuracy": 0.5}
    assert status["members"][1]["last_eval"] is None
    assert all(m["slurm"] is None for m in status["members"])  # never submitted
    # once its holder is gone, an unfinished member has failed (stopped); the table says so too
    assert sweep_status(out)["members"][1]["state"] == "failed"
    table = CliRunner().invoke(app, ["sweep", "status", str(out)])
    assert table.exit_code == 0 and "failed" in table.output and "finished" in table.output


def test_sweep_status_reads_the_submitted_tasks(tmp_path):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "sweep.json").write_text(
        json.dumps({"name": "x", "members": [{"name": "a"}, {"name": "b"}]})
    )
    (tmp_path / JOBS_FILE).write_text(
        json.dumps([{"job_id": "77", "script": "sweep-0.sbatch", "members": ["a", "b"]}])
    )
    status = sweep_status(tmp_path)
    assert [m["slurm"]["job_id"] for m in status["members"]] == ["77_0", "77_1"]


def test_sweep_command_still_runs_a_sweep_file_by_default(tmp_path, fake_loop):
    path = write_sweep(tmp_path, {"name": "d", "members": [{"name": "m"}]})
    fake = fake_loop()
    res = CliRunner().invoke(app, ["sweep", str(path), "--sweep-dir", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert fake.calls == [("m", False)]
    listed = CliRunner().invoke(app, ["sweep", "--dry-run", str(path), "loop.rounds=1"])
    assert listed.exit_code == 0 and "name: m" in listed.output
