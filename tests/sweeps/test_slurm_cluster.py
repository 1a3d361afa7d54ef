"""Sweeps on a real SLURM: the one-node cluster of `make slurm-up` (scripts/slurm_cluster.sh),
started here when none answers; every test skips, saying why, where it cannot start.

One CI-sized sweep on the quickstart world (three members, one round, the tiny test student)
submitted with `sweep --submit`: every member finishes and `report` names them all; member `b`
is signalled mid-run with SLURM's warning signal, stops at a safe point, requeues itself and ends
with the same metrics.jsonl rows (timing aside) as its twin `a`, which ran uninterrupted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
import yaml
from slurm_cluster import CLUSTER
from tiny_runs import read_jsonl, without_timing

from mbt_online.config import resolve_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

BIN = Path(sys.executable).parent  # the venv's mbt-online, for the jobs


slurm = slurm_cluster.slurm  # the one-node cluster of `make slurm-up` (a fixture)


def squeue(env: dict[str, str], job: str) -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-j", job, "-o", "%i|%T"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.split() if "|" in line)


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def differences(a: list[dict], b: list[dict]) -> list[tuple]:
    return [
        (ra.get("round"), k, ra.get(k), rb.get(k))
        for ra, rb in zip(a, b, strict=True)
        for k in sorted(set(ra) | set(rb))
        if ra.get(k) != rb.get(k)
    ]


def sweep_status(out: Path, env: dict[str, str]) -> dict:
    """`mbt-online sweep status --json` as a user on the cluster runs it (SLURM_CONF set)."""
    res = subprocess.run(
        [str(BIN / "mbt-online"), "sweep", "status", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.timeout(1800)
def test_submitted_sweep_finishes_and_a_preempted_member_resumes_identically(
    slurm, tiny_model_dir, tmp_path
):
    pytest.importorskip("vllm")
    smaller = {
        "loop.rounds": 1,
        "data.train.limit": 4,
        "data.eval.limit": 4,
        "rollout.samples": 2,
        "rollout.max_tokens": 24,
        "eval.sampling.max_tokens": 24,
        "student.model": str(tiny_model_dir),
        "student.max_model_len": 1024,
        "train.sft.max_length": 1024,
        "train.dpo.max_length": 1024,
        "train.sft.epochs": 4,  # a TRAIN stage long enough to be signalled inside
        "teacher.budget_tokens": 4000,
        "train.dpo.margin": 0.05,
        "tracking.wandb_mode": "disabled",
    }
    sweep = tmp_path / "ci.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "ci",
                "base": str(resolve_config("quickstart")),
                "overrides": smaller,
                # a and b are twins (b gets preempted); c differs
                "members": [
                    {"name": "a"},
                    {"name": "b"},
                    {"name": "c", "overrides": {"teacher.mode": "mbt-s"}},
                ],
                # one member at a time: the machine has two cores
                "slurm": {"cpus_per_task": 2, "max_parallel": 1, "signal_seconds": 60},
            },
            sort_keys=False,
        )
    )
    out = tmp_path / "sweep"
    env = {
        **slurm,
        "PATH": f"{BIN}:{slurm['PATH']}",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    res = subprocess.run(
        [str(BIN / "mbt-online"), "sweep", str(sweep), "--submit", "--sweep-dir", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    job_id, script = res.stdout.split("\n")[0].split(":")[0].split()
    assert job_id.isdigit() and script == "sweep-0.sbatch"
    assert f"{job_id} sweep-0.sbatch: a, b, c" in res.stdout

    # b: signal its batch shell as SLURM's warning would, once its round-1 TRAIN is under way
    b_log = out / "b" / "run.log"
    wait_for(lambda: b_log.exists() and "stage train: start" in b_log.read_text(), 900, "b's TRAIN")
    task_b = f"{job_id}_1"
    sig = subprocess.run(
        ["scancel", "--signal=USR1", "--batch", task_b], env=env, capture_output=True, text=True
    )
    assert sig.returncode == 0, sig.stderr
    # it stops at the safe point after TRAIN and requeues itself; SLURM holds a requeued job
    # back for a while (BeginTime): release it now rather than wait
    wait_for(lambda: "preempted" in b_log.read_text(), 600, "b to stop at a safe point")
    state = json.loads((out / "b" / "state.json").read_text())
    assert "round-1/train" in state["completed"] and "round-1/eval" not in state["completed"]
    assert not state["finished"]
    wait_for(lambda: squeue(env, job_id).get(task_b) == "PENDING", 120, "b to be requeued")
    mid = {m["name"]: m for m in sweep_status(out, env)["members"]}
    assert mid["a"]["state"] == "finished" and mid["a"]["last_eval"]["round"] == 1
    assert mid["b"]["state"] == "queued" and mid["b"]["slurm"] == {
        "job_id": task_b,
        "state": "PENDING",
    }
    assert (mid["b"]["round"], mid["b"]["stage"]) == (1, "eval")  # where the resume goes on
    subprocess.run(["scontrol", "update", f"JobId={task_b}", "StartTime=now"], env=env, check=True)

    wait_for(lambda: not squeue(env, job_id), 1200, "every task to end", poll=3.0)
    for name in ("a", "b", "c"):
        state = json.loads((out / name / "state.json").read_text())
        assert state["finished"], (name, (out / "slurm").glob("*.out"))
    logs = "".join(p.read_text() for p in sorted((out / "slurm").glob("*.out")))
    assert f"member b stopped at a safe point: requeueing {task_b}" in logs
    b_text = b_log.read_text()
    assert "resuming" in b_text and "round 1: " in b_text
    # the preempted member ends exactly like its uninterrupted twin (wall-clock numbers aside)
    a_rows, b_rows = (
        read_jsonl(out / "a" / "metrics.jsonl"),
        read_jsonl(out / "b" / "metrics.jsonl"),
    )
    assert [r["round"] for r in a_rows] == [0, 1]
    assert differences(without_timing(a_rows), without_timing(b_rows)) == []

    members = sweep_status(out, env)["members"]
    assert [(m["name"], m["state"]) for m in members] == [
        ("a", "finished"),
        ("b", "finished"),
        ("c", "finished"),
    ]
    assert [m["slurm"]["job_id"] for m in members] == [f"{job_id}_{i}" for i in range(3)]

    html = tmp_path / "report.html"
    rep = subprocess.run(
        [str(BIN / "mbt-online"), "report", str(out), "--out", str(html)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert rep.returncode == 0, rep.stderr[-2000:]
    from mbt_online.report.runs import find_runs

    assert [r.name for r in find_runs([out])] == ["a", "b", "c"]
    page = html.read_text()
    assert all(f'"{name}"' in page for name in ("a", "b", "c"))


def test_cluster_script_reports_a_running_cluster(slurm):
    res = subprocess.run(["bash", str(CLUSTER), "status"], env=slurm)
    assert res.returncode == 0
    assert shutil.which("sbatch") and shutil.which("scontrol")
