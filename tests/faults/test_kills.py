"""SIGKILL anywhere: a run killed inside every stage, half-way through writing every stage's output,
between each output and its mark, and at every stage boundary (round 1, plus round 0's and round
2's edges and the last save) is resumed by a second process and ends identical to an
uninterrupted run, having redone only what was not marked done.

Each run is a child process with the fake generator, teacher and trainer (tests/fakes.py) that
dies by `os.kill(getpid(), SIGKILL)` at the point named in its environment (harness.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import artifacts, tiny_config

from faults.harness import (
    KILL_ENV,
    STAGES,
    in_child,
    install_kill_hook,
    parse_point,
    resume_run,
    run_dir_of,
    start_run,
)
from mbt_online.rundir import read_metrics, stage_dir

WHERE = {stage: ("in", "write", "unmarked", "marked") for stage in STAGES}
WHERE["eval"] = ("in", "write", "saved", "unmarked", "marked")
POINTS = [
    "marked:eval@0",
    *(f"{where}:{stage}" for stage in STAGES for where in WHERE[stage]),
    "in:rollout@2",
    "marked:train@2",
    "finish",
]


def killed_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def expected_completed(point: str, full: list[str]) -> list[str]:
    """What state.json holds after a kill at `point`: the stages of an uninterrupted run up to
    the point, the point's own stage only once it is marked."""
    where, stage, r = parse_point(point)
    if where == "finish":
        return full
    i = full.index(f"round-{r}/{stage}")
    return full[: i + (where == "marked")]


def expected_metrics_rounds(point: str) -> list[int]:
    where, stage, r = parse_point(point)
    if where == "finish":
        return [0, 1, 2]
    logged = stage == "eval" and where in ("unmarked", "marked")
    return list(range(r)) + ([r] if logged else [])


def rerun(state: dict, run_dir: Path, rounds: int = 2) -> dict[str, list[int]]:
    """The rounds whose rollout, eval, teach and train a resume must run again: those not marked
    done (an eval whose rows are already in place is not sampled again)."""
    done = set(state["completed"])
    out: dict[str, list[int]] = {}
    for stage in ("rollout", "teach", "train", "eval"):
        first = 0 if stage == "eval" else 1
        out[stage] = [
            r
            for r in range(first, rounds + 1)
            if f"round-{r}/{stage}" not in done
            and not (stage == "eval" and stage_dir(run_dir, r, "eval").exists())
        ]
    return out


def ran(calls: list, cfg) -> dict[str, list[int]]:
    """The rounds of each stage the fake drivers saw run (from the seeds of generate calls)."""
    gens = [c for c in calls if c[0] == "generate"]
    eval_base, roll_base = cfg.eval.sampling.seed + 10_000, cfg.rollout.seed
    eval_seeds = {eval_base + r for r in range(3)}
    return {
        "rollout": [c[2] - roll_base for c in gens if c[2] not in eval_seeds],
        "teach": [c[1] for c in calls if c[0] == "teach"],
        "train": [c[2] for c in calls if c[0] == "train"],  # the train seed is run.seed + round
        "eval": [c[2] - eval_base for c in gens if c[2] in eval_seeds],
    }


def leftovers(run_dir: Path) -> list[str]:
    """Temp or set-aside folders of a killed writer still in the run."""
    return [
        str(p.relative_to(run_dir))
        for p in run_dir.rglob(".*")
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name)
    ]


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_end(point, reference, tmp_path):
    cfg = tiny_config(tmp_path / "runs")
    assert cfg.run.seed == 0 and cfg.eval.sampling.seed + 10_000 > cfg.rollout.seed + 2
    run_dir = run_dir_of(cfg)

    killed = in_child(
        lambda: start_run(cfg), tmp_path, env={KILL_ENV: point}, setup=install_kill_hook
    )
    assert killed.killed, f"never reached {point}: {killed.describe()}\n{killed.output[-2000:]}"
    state = killed_state(run_dir)
    assert state["completed"] == expected_completed(point, reference["state"]["completed"])
    assert not state["finished"]
    assert [m["round"] for m in read_metrics(run_dir)] == expected_metrics_rounds(point)
    todo = rerun(state, run_dir)

    resumed = in_child(lambda: resume_run(cfg), tmp_path)
    calls = resumed.value
    assert artifacts(run_dir) == reference
    assert ran(calls, cfg) == todo, "a resume redoes exactly what was not marked done"
    assert leftovers(run_dir) == [], "the next writer clears a dead writer's temp folders"
    assert "resuming" in (run_dir / "run.log").read_text()
