"""Staged TRAIN (`runtime.mode: staged`): the `accelerate launch` command, its config files, the
child process on the tiny student, a crashing child and its resume, and `train --dry-run`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_runs import ONE_ROUND, cli_env, read_jsonl, tiny_overrides, without_timing

from mbt_online.config import CONFIG_DIR, ConfigError, load_config
from mbt_online.hardware import free_port, resolved_mode
from mbt_online.training.staged import (
    CHILD_MODULE,
    FIRST_NODE,
    World,
    accelerate_program,
    sharding_of,
    trainer_command,
)

ACCELERATE = sorted((CONFIG_DIR / "accelerate").glob("*.yaml"))


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ---------------------------------------------------------------------------------------------
# the command


def test_local_command_carries_the_world_and_the_job():
    cfg = load_config(
        None,
        [
            "runtime.mode=staged",
            "runtime.accelerate_config=accelerate/ddp",
            "runtime.num_processes=4",
            "runtime.num_machines=2",
            "runtime.machine_rank=1",
            "runtime.main_process_ip=10.0.0.7",
            "runtime.main_process_port=29511",
            "train.threads=3",
        ],
    )
    argv = trainer_command(cfg, "/r/round-1/train/job.json", World.from_runtime(cfg.runtime))
    assert argv[:2] == [accelerate_program(), "launch"]
    assert arg(argv, "--config_file") == str(CONFIG_DIR / "accelerate" / "ddp.yaml")
    assert arg(argv, "--num_processes") == "8"  # accelerate's count is over all machines
    assert (arg(argv, "--num_machines"), arg(argv, "--machine_rank")) == ("2", "1")
    assert arg(argv, "--main_process_ip") == "10.0.0.7"
    assert arg(argv, "--main_process_port") == "29511"
    assert arg(argv, "--mixed_precision") == "bf16"  # the quickstart's train.bf16
    assert arg(argv, "--num_cpu_threads_per_process") == "3"
    assert argv[-3:] == ["-m", CHILD_MODULE, "/r/round-1/train/job.json"]


@pytest.mark.parametrize(
    ("overrides", "bf16"),
    [
        (["student.dtype=float32", "train.bf16=null"], False),  # null follows the student
        (["student.dtype=bfloat16", "train.bf16=null"], True),
        (["student.dtype=bfloat16", "train.bf16=false"], False),  # an explicit choice wins
        (["student.dtype=float32", "train.bf16=true"], True),
    ],
)
def test_train_bf16_follows_the_student_unless_set(overrides, bf16):
    from mbt_online.training.staged import train_bf16

    cfg = load_config(None, ["runtime.mode=staged", *overrides])
    assert train_bf16(cfg) is bf16
    argv = trainer_command(cfg, "/r/job.json", World.from_runtime(cfg.runtime))
    assert arg(argv, "--mixed_precision") == ("bf16" if bf16 else "no")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks here")
def test_default_threads_share_the_cores_this_process_may_use():
    """Without train.threads or OMP_NUM_THREADS, TRAIN's threads come from the affinity mask
    (taskset, a SLURM allocation, a pinned test worker), not every core of the machine."""
    code = (
        "import os\n"
        "os.environ.pop('OMP_NUM_THREADS', None)\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from mbt_online.config import load_config\n"
        "from mbt_online.training.staged import World, trainer_command, usable_cores\n"
        "cfg = load_config(None, ['runtime.mode=staged', 'train.threads=null'])\n"
        "argv = trainer_command(cfg, 'job.json', World.from_runtime(cfg.runtime))\n"
        "print(usable_cores(), argv[argv.index('--num_cpu_threads_per_process') + 1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1"]


def test_one_process_defaults_to_the_shipped_single_process_config():
    cfg = load_config(None, ["runtime.mode=staged", "student.dtype=bfloat16"])
    argv = trainer_command(cfg, "job.json", World.from_runtime(cfg.runtime))
    assert arg(argv, "--config_file") == str(CONFIG_DIR / "accelerate" / "single_gpu.yaml")
    assert arg(argv, "--num_processes") == "1" and arg(argv, "--mixed_precision") == "bf16"
    assert "--main_process_ip" not in argv  # one machine: localhost


def test_port_zero_is_a_free_port_per_launch():
    cfg = load_config(None, ["runtime.mode=staged"])
    port = int(
        arg(trainer_command(cfg, "j", World.from_runtime(cfg.runtime)), "--main_process_port")
    )
    import socket

    with socket.socket() as s:  # free when chosen: this test can bind it
        s.bind(("", port))
    assert 0 < free_port() <= 65535
    assert World.from_runtime(cfg.runtime, pick_port=False).port is None


def srun_cfg(tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            "runtime.mode=staged",
            "runtime.launcher=srun",
            "runtime.accelerate_config=accelerate/fsdp2",
            "runtime.num_processes=2",
            "runtime.num_machines=3",
            "runtime.main_process_port=29600",
            *extra,
        ],
    )


def run_task_script(argv: list[str], tmp_path: Path, node_id: str) -> list[str]:
    """Run the script one srun task would run, with `accelerate` replaced by printf (one argument
    a line) and a fake `scontrol` listing the allocation: what that task would launch."""
    assert argv[: argv.index("sh")] == [
        "srun",
        "--nodes",
        "3",
        "--ntasks-per-node",
        "1",
        "--kill-on-bad-exit=1",
    ]
    script = argv[-1].replace(shlex.quote(accelerate_program()), "printf '%s\\n'", 1)
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "scontrol").write_text("#!/bin/sh\nprintf 'node-a\\nnode-b\\nnode-c\\n'\n")
    (fake / "scontrol").chmod(0o755)
    env = {
        **os.environ,
        "SLURM_NODEID": node_id,
        "SLURM_JOB_NODELIST": "node-[a-c]",
        "PATH": f"{fake}:{os.environ['PATH']}",
    }
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_srun_takes_each_nodes_rank_from_slurm(tmp_path):
    cfg = srun_cfg(tmp_path)
    argv = trainer_command(cfg, "/r/job.json", World.from_runtime(cfg.runtime))
    assert FIRST_NODE in argv[-1]
    task = run_task_script(argv, tmp_path, node_id="2")
    assert task[:1] == ["launch"]
    assert arg(task, "--machine_rank") == "2" and arg(task, "--num_processes") == "6"
    assert arg(task, "--main_process_ip") == "node-a"  # the allocation's first node
    assert arg(task, "--main_process_port") == "29600"
    assert arg(task, "--config_file").endswith("accelerate/fsdp2.yaml")
    assert task[-3:] == ["-m", CHILD_MODULE, "/r/job.json"]


def test_srun_with_a_fixed_main_address(tmp_path):
    cfg = srun_cfg(tmp_path, "runtime.main_process_ip=10.1.2.3")
    argv = trainer_command(cfg, "/r/job.json", World.from_runtime(cfg.runtime))
    task = run_task_script(argv, tmp_path, node_id="0")
    assert arg(task, "--main_process_ip") == "10.1.2.3" and arg(task, "--machine_rank") == "0"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (["runtime.num_processes=0"], "runtime.num_processes"),
        (["runtime.num_machines=0"], "runtime.num_machines"),
        (["runtime.machine_rank=2", "runtime.num_machines=2"], "runtime.machine_rank"),
        (["runtime.main_process_port=65536"], "runtime.main_process_port"),
        (["runtime.main_process_port=-1"], "runtime.main_process_port"),
        (["runtime.num_processes=2"], "runtime.accelerate_config"),
        (["runtime.accelerate_config=accelerate/zero9"], "runtime.accelerate_config"),
        (["runtime.mode=sometimes"], "runtime.mode"),
        (["runtime.launcher=mpirun"], "runtime.launcher"),
        (
            ["runtime.num_machines=2", "runtime.accelerate_config=accelerate/ddp"],
            "runtime.main_process_ip",
        ),
    ],
)
def test_runtime_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, override)


def test_mode_resolution_on_this_machine():
    import torch

    cfg = load_config(None, [])
    expected = "staged" if torch.cuda.is_available() else "inproc"
    assert resolved_mode(cfg.runtime) == expected
    assert resolved_mode(load_config(None, ["runtime.mode=staged"]).runtime) == "staged"
    assert resolved_mode(load_config(None, ["runtime.mode=inproc"]).runtime) == "inproc"


# ---------------------------------------------------------------------------------------------
# the shipped accelerate configs


def test_shipped_accelerate_configs_load_in_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    assert [p.stem for p in ACCELERATE] == ["ddp", "fsdp2", "single_gpu", "zero2", "zero3"]
    loaded = {p.stem: load_config_from_file(str(p)) for p in ACCELERATE}
    assert loaded["single_gpu"].distributed_type == DistributedType.NO
    assert loaded["ddp"].distributed_type == DistributedType.MULTI_GPU
    assert loaded["fsdp2"].distributed_type == DistributedType.FSDP
    assert loaded["fsdp2"].fsdp_config["fsdp_version"] == 2
    assert loaded["fsdp2"].fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    for stage in (2, 3):
        c = loaded[f"zero{stage}"]
        assert c.distributed_type == DistributedType.DEEPSPEED
        assert c.deepspeed_config["zero_stage"] == stage
    assert loaded["zero3"].deepspeed_config["zero3_save_16bit_model"] is True
    for c in loaded.values():  # precision comes from launch.train_bf16 on the command line
        assert c.mixed_precision == "no" and not c.use_cpu
    shardings = {p.stem: sharding_of(p) for p in ACCELERATE}
    assert shardings == {
        "ddp": "none",
        "fsdp2": "zero3",
        "single_gpu": "none",
        "zero2": "zero2",
        "zero3": "zero3",
    }


# ---------------------------------------------------------------------------------------------
# train --dry-run for a 1- and an 8-GPU overlay


def dry_run(tmp_path: Path, *configs: str) -> list[str]:
    args = [a for c in configs for a in ("-c", c)]
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbt_online",
            "train",
            "--dry-run",
            *args,
            "--run-dir",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert not run_dir.exists() and not any(tmp_path.iterdir())  # creates nothing
    return [line.removeprefix("# ") for line in out.stdout.splitlines() if line.startswith("# ")]


def command_in(plan: list[str]) -> list[str]:
    line = next(line for line in plan if " launch --config_file " in line)
    return shlex.split(line)


def test_dry_run_one_gpu(tmp_path):
    plan = dry_run(tmp_path, "gpu/qwen3-4b", "gpu/hw-1gpu")
    argv = command_in(plan)
    assert argv[:2] == [accelerate_program(), "launch"]
    assert arg(argv, "--config_file") == str(CONFIG_DIR / "accelerate" / "single_gpu.yaml")
    assert arg(argv, "--num_processes") == "1" and arg(argv, "--mixed_precision") == "bf16"
    assert argv[-1] == str(tmp_path / "run" / "round-1" / "train" / "job.json")
    assert any(line.startswith("TRAIN runs staged") and "world 1" in line for line in plan)
    assert any(line.startswith("generator: engine.backend=vllm") for line in plan)
    assert "sft global batch: batch_size 1 x grad_accum 128 x 1 process = 128" in plan
    memory = next(line for line in plan if line.startswith("memory per device"))
    assert "train.method=lora, 4.02B parameters, 1 process, sharding none" in memory
    assert "total 34.7 GB" in memory


def test_dry_run_eight_gpus(tmp_path):
    plan = dry_run(tmp_path, "gpu/qwen3-8b", "gpu/hw-8gpu")
    argv = command_in(plan)
    assert arg(argv, "--config_file") == str(CONFIG_DIR / "accelerate" / "zero3.yaml")
    assert arg(argv, "--num_processes") == "8" and arg(argv, "--num_machines") == "1"
    assert any("world 8" in line for line in plan)
    assert "sft global batch: batch_size 1 x grad_accum 16 x 8 processes = 128" in plan
    memory = next(line for line in plan if line.startswith("memory per device"))
    # ZeRO-3 over 8: 8.19B x (4 + 4 + 8) bytes / 8 = 16.4 GB of state, plus 32k tokens' activations
    assert "8.19B parameters, 8 processes, sharding zero3" in memory
    assert "weights 4.1 GB, grads 4.1 GB, AdamW 8.2 GB" in memory and "total 90.8 GB" in memory


# ---------------------------------------------------------------------------------------------
# the real child on the tiny student (accelerate launch, one CPU process)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mbt_online", "train", *args]
    return subprocess.run(cmd, env=cli_env(), capture_output=True, text=True)


def weights(run: Path, round_: int) -> dict:
    from safetensors.torch import load_file

    model = json.loads((run / "state.json").read_text())["models"][str(round_)]
    return load_file(str(run / model / "model.safetensors"))


@pytest.mark.slow
def test_staged_run_matches_inproc(tiny_model_dir, tmp_path, clean_tiny_run):
    # one round on 4 training questions, one training thread in both modes (the same floating-point
    # sums): the config of the session's uninterrupted in-process run, `clean_tiny_run`
    extra = {**ONE_ROUND, "runtime.mode": "staged"}
    out = run_cli(*tiny_overrides(tiny_model_dir, tmp_path / "staged", **extra))
    assert out.returncode == 0, out.stderr[-3000:]
    # the same config with TRAIN in-process (the session's run, shared with test_loop)
    a, b = clean_tiny_run, tmp_path / "staged" / "tiny"
    rows = read_jsonl(b / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["train/sft_rows"] >= 1
    assert without_timing(read_jsonl(a / "metrics.jsonl")) == without_timing(rows)
    wa, wb = weights(a, 1), weights(b, 1)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)

    train = b / "round-1" / "train"
    job = json.loads((train / "job.json").read_text())
    assert job["sft"] == str((b / "round-1" / "build" / "sft").absolute())
    result = json.loads((train / "result.json").read_text())
    recorded = json.loads((b / "state.json").read_text())["models"]["1"]
    assert Path(result["model"]).resolve() == (b / recorded).resolve()
    assert result["metrics"]["train/sft_rows"] == rows[1]["train/sft_rows"]
    assert "accelerate" in (b / "run.log").read_text()  # the launch command is logged
    assert (train / "child.log").read_text().startswith("$ ")
    assert not (a / "round-1" / "train" / "job.json").exists()  # inproc launches nothing


@pytest.mark.slow
def test_crashing_child_stops_the_run_and_resume_retries(tiny_model_dir, tmp_path):
    from mbt_online import loop
    from mbt_online.training.staged import TrainChildFailed

    cfg = load_config(
        None, tiny_overrides(tiny_model_dir, tmp_path, **ONE_ROUND, **{"runtime.mode": "staged"})
    )
    run = cfg.run_dir()
    sft = run / "round-1" / "build" / "sft"
    backup = tmp_path / "sft.arrow"

    def corrupting(c, run_dir):
        """The real drivers; just before TRAIN, BUILD's SFT file on disk is damaged (a new file
        swapped in, as a disk fault would leave it), so the child fails to read it."""
        drivers = loop.real_drivers(c, run_dir)
        make = drivers.make_trainer

        def damage_then_make():
            arrow = next(sft.glob("*.arrow"))
            backup.write_bytes(arrow.read_bytes())
            junk = arrow.with_suffix(".junk")
            junk.write_bytes(b"not an arrow file")
            os.replace(junk, arrow)
            return make()

        drivers.make_trainer = damage_then_make
        return drivers

    with pytest.raises(TrainChildFailed) as e:
        loop.train(cfg, drivers=corrupting)
    assert "TRAIN child exited with status 1" in str(e.value)
    assert any("Arrow" in line or "arrow" in line for line in e.value.tail)
    state = json.loads((run / "state.json").read_text())
    assert "round-1/build" in state["completed"] and "round-1/train" not in state["completed"]
    assert not (run / "round-1" / "train" / "result.json").exists()

    arrow = next(sft.glob("*.arrow"))
    fixed = arrow.with_suffix(".fixed")
    fixed.write_bytes(backup.read_bytes())
    os.replace(fixed, arrow)
    resumed = run_cli("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads((run / "state.json").read_text())
    assert state["finished"] and "round-1/train" in state["completed"]
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["train/sft_rows"] >= 1


def test_a_failing_child_raises_with_its_last_lines(tmp_path):
    """A real `accelerate launch` whose child fails at once (the job's run has no config.yaml):
    the error carries the child's own message, not accelerate's wrapper traceback."""
    from mbt_online.contracts import TrainJob
    from mbt_online.training.staged import StagedTrainer, TrainChildFailed

    run = tmp_path / "run"
    (run / "round-1" / "build" / "sft").mkdir(parents=True)
    cfg = load_config(None, ["runtime.mode=staged", "train.threads=1"])
    out = run / "round-1" / "train"
    job = TrainJob(start_model=str(tmp_path), sft=[{}], pairs=[], out_dir=out, seed=3)
    with pytest.raises(TrainChildFailed) as e:
        StagedTrainer(cfg, run).train(job)
    assert "TRAIN child exited with status 1" in str(e.value) and len(e.value.tail) <= 20
    assert "config file not found" in e.value.tail[-1]
    assert not any("CalledProcessError" in line for line in e.value.tail)
    assert f"--resume {run}" in e.value.resume_hint()
    spec = json.loads((out / "job.json").read_text())
    assert (spec["seed"], spec["sft"], spec["dpo"]) == (3, str(run / "round-1/build/sft"), None)
    assert "CalledProcessError" in (out / "child.log").read_text()  # the log keeps everything
    assert not (out / "result.json").exists()


_CHILD_ERROR = [
    "Traceback (most recent call last):",
    '  File "train_child.py", line 37, in load_job',
    "mbt_online.config.ConfigError: config file not found: run/config.yaml",
]
_WRAPPER = [
    "Traceback (most recent call last):",
    '  File ".venv/bin/accelerate", line 6, in <module>',
    "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1.",
]


@pytest.mark.parametrize(
    "between",
    [
        [],  # accelerate 1.15: its traceback follows the child's
        # accelerate 1.16: the child's stderr echoed as a RuntimeError, then the chaining sentence
        ["", "", "The above exception was the direct cause of the following exception:", ""],
    ],
)
def test_child_tail_ends_with_the_childs_error_whatever_accelerate_prints(between):
    """accelerate 1.16 chains its wrapper traceback to the child's stderr (`raise ... from
    RuntimeError(stderr)`): the chaining sentence must not become the tail's last line."""
    from mbt_online.training.staged import _child_tail

    echo = ["RuntimeError: " + _CHILD_ERROR[0], *_CHILD_ERROR[1:]] if between else []
    lines = ["step 1", *_CHILD_ERROR, *echo, *between, *_WRAPPER]
    tail = _child_tail(lines)
    assert tail[-1] == _CHILD_ERROR[-1]
    assert not any("CalledProcessError" in line or "direct cause" in line for line in tail)
    assert _child_tail(["step 1", *_CHILD_ERROR]) == ["step 1", *_CHILD_ERROR]  # nothing to cut


def test_cli_reports_a_failed_child_and_how_to_resume(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mbt_online import loop
    from mbt_online.cli.common import app
    from mbt_online.training.staged import TrainChildFailed

    def fail(*args, **kwargs):  # the loop's control flow only: the child itself is tested above
        raise TrainChildFailed("the TRAIN child exited with status 1", tmp_path, ["boom"])

    monkeypatch.setattr(loop, "train", fail)
    out = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert out.exit_code == 1  # the child failed: a stage failure, not a usage error
    text = " ".join(out.output.split())
    assert "exited with status 1" in text and "| boom" in text
    assert f"mbt-online train --resume {tmp_path}" in text and "endpoint" not in text


def test_stop_file_sets_the_childs_preemption_flag(tmp_path):
    from mbt_online import preemption
    from mbt_online.training.child import watching_stop_file

    stop = tmp_path / "STOP"
    with preemption.handling(), watching_stop_file(stop, every_s=0.01):
        time.sleep(0.05)
        assert preemption.requested() is None  # no file, no stop
        stop.write_text("{}")
        deadline = time.time() + 5
        while preemption.requested() is None and time.time() < deadline:
            time.sleep(0.01)
        assert "STOP" in (preemption.requested() or "")
        with pytest.raises(preemption.Preempted):
            preemption.check("the next step")


def test_a_child_ended_by_a_stop_request_preempts_the_run(tmp_path, caplog):
    """Asked to stop while TRAIN runs: the child is told through the STOP file, and its early
    exit ends the run as preempted (requeued), not as a failure."""
    from mbt_online import preemption
    from mbt_online.contracts import TrainJob
    from mbt_online.training.staged import StagedTrainer

    run = tmp_path / "run"
    (run / "round-1" / "build" / "sft").mkdir(parents=True)
    cfg = load_config(None, ["runtime.mode=staged", "train.threads=1"])
    out = run / "round-1" / "train"
    job = TrainJob(start_model=str(tmp_path), sft=[{}], pairs=[], out_dir=out, seed=3)
    caplog.set_level("INFO", logger="mbt_online")
    try:
        preemption.request("SIGUSR1")
        with pytest.raises(preemption.Preempted) as e:
            StagedTrainer(cfg, run).train(job)
    finally:
        preemption.reset()
    assert e.value.signal_name == "SIGUSR1"
    assert "asked the TRAIN child to stop" in caplog.text
    assert not (out / "STOP").exists()  # a resumed stage starts without it


# ---------------------------------------------------------------------------------------------
# GRPO: its own job, after TRAIN's


def test_a_grpo_job_names_its_samples_and_the_child_reads_them_back(tmp_path):
    from mbt_online.config import dump_config
    from mbt_online.contracts import TrainJob
    from mbt_online.rundir import load_dataset_dir, save_rows
    from mbt_online.training.child import load_job
    from mbt_online.training.staged import job_spec

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(load_config(None, ["train.grpo.enabled=true"]), run_dir / "config.yaml")
    out = run_dir / "round-1" / "grpo"
    save_rows(
        [{"example_id": "q", "sample": k, "completion_ids": [1, 2, k]} for k in range(2)],
        out / "samples",
    )
    job = TrainJob("m", [], [], out, 3, grpo=load_dataset_dir(out / "samples"))
    spec = job_spec(job, run_dir)
    assert spec["grpo"] == str((out / "samples").absolute()) and spec["grpo_rows"] == 2
    assert spec["sft"] is None and spec["dpo"] is None
    (out / "job.json").write_text(json.dumps(spec))
    cfg, back = load_job(out / "job.json")
    assert cfg.train.grpo.enabled and back.out_dir == out.absolute()
    assert [r["completion_ids"] for r in back.grpo] == [[1, 2, 0], [1, 2, 1]]


def test_dry_run_prints_the_grpo_steps_command_and_memory():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbt_online",
            "train",
            "-c",
            "gpu/qwen3-1.7b",
            "train.grpo.enabled=true",
            "runtime.mode=staged",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("# ")]
    grpo = next(i for i, line in enumerate(lines) if line.startswith("# GRPO runs after TRAIN"))
    assert lines[grpo + 1].endswith(
        "-m mbt_online.training.child runs/qwen3-1.7b/round-1/grpo/job.json"
    )
    assert any(
        line.startswith("# grpo global batch: 2 completions x grad_accum 16 x 1 process = 32")
        for line in lines
    )
    assert any(line.startswith("# grpo memory per device (2 completions") for line in lines)
