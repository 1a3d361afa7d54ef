"""Benchmark the main job: `mbt-online train` on the quickstart config, fresh, over several seeds.

Each run is a child process with its own empty student cache, so the bootstrap is included as on
a new user's first `make quickstart`, and a different `run.seed` (the engine's, shuffling's and
training's seed; the bootstrap student is the config's). For every run it prints the wall time,
the child's own peak resident memory and the learning targets read from the run's
`metrics.jsonl`, then one summary JSON line: the targets hold only if every run meets every one.
A single lucky draw proves nothing here (vLLM on a CPU is not reproducible across processes), so
the default is three seeds. Run it alone: two torch jobs on two cores slow each other several-fold.

    .venv/bin/python scripts/bench_quickstart.py [--seeds 0 1 2] [--keep-cache] [override ...]
    .venv/bin/python scripts/bench_quickstart.py --seeds 0 1 2 --bootstrap-seeds 1 2 3

`--bootstrap-seeds` pairs each run with its own bootstrap student (`bootstrap.seed`): the
targets must hold for the method, not for one lucky student (issue 34).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import CALLER_ENV, emit, machine

TARGET_SECONDS = 300.0  # set-up excluded, bootstrap included (issue 22)
TARGET_GIB = 4.0
# round 0 shows the failures; the last round shows them regulated (docs/performance.md, "Quickstart
# targets")
ROUND0_MIN = {"eval/degeneration_rate": 0.15, "eval/answer_inclusive_rate": 0.10}
GAIN_ACCURACY = 0.15  # points, last round over round 0
TOKENS_CUT = 0.40  # mean tokens down at least this fraction
FINAL_DEGENERATION_MAX = 0.02


def learning_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The quickstart's learning targets from a run's metric rows (one per round, round 0 first):
    the measured values, and which targets each one meets."""
    first, last = rows[0], rows[-1]
    measured = {
        "rounds": last["round"],
        "round0_degeneration": first["eval/degeneration_rate"],
        "round0_answer_inclusive": first["eval/answer_inclusive_rate"],
        "accuracy_gain": last["eval/accuracy"] - first["eval/accuracy"],
        "tokens_change": last["eval/mean_tokens"] / first["eval/mean_tokens"] - 1.0,
        "final_degeneration": last["eval/degeneration_rate"],
    }
    met = {
        "round0_degeneration": measured["round0_degeneration"]
        >= ROUND0_MIN["eval/degeneration_rate"],
        "round0_answer_inclusive": measured["round0_answer_inclusive"]
        >= ROUND0_MIN["eval/answer_inclusive_rate"],
        "accuracy_gain": measured["accuracy_gain"] >= GAIN_ACCURACY,
        "tokens_change": measured["tokens_change"] <= -TOKENS_CUT,
        "final_degeneration": measured["final_degeneration"] <= FINAL_DEGENERATION_MAX,
    }
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in measured.items()}
    return {**rounded, "met": met}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's evaluation rows, by round (a resumed run may repeat a round: the last wins)."""
    rows: dict[int, dict[str, Any]] = {}
    path = run_dir / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["round"]] = row
    return [rows[r] for r in sorted(rows)]


def child_env(work: Path, seed: int, keep_cache: bool) -> dict[str, str]:
    """The caller's environment, not the benchmarks' defaults (`bench_common.ENV_DEFAULTS`: a
    2 GiB KV cache where the quickstart's engine takes 1, wandb disabled where it logs offline),
    which once added 1 GiB to the peak measured here; only the student cache is the run's own."""
    env = dict(CALLER_ENV)
    if not keep_cache:
        env["MBT_ONLINE_CACHE"] = str(work / f"cache-{seed}")
    return env


def run_once(
    seed: int, work: Path, keep_cache: bool, overrides: list[str], bootstrap: int | None = None
) -> dict[str, Any]:
    """One fresh quickstart as a child process: wall time, its own peak RSS, its targets."""
    env = child_env(work, seed, keep_cache)
    name = f"seed-{seed}" if bootstrap is None else f"seed-{seed}-bootstrap-{bootstrap}"
    cmd = [sys.executable, "-m", "mbt_online", "train", f"run.runs_dir={work}"]
    cmd += [f"run.name={name}", f"run.seed={seed}", *overrides]
    cmd += [] if bootstrap is None else [f"bootstrap.seed={bootstrap}"]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = {
        "seed": seed,
        "bootstrap_seed": bootstrap,
        "exit_code": code,
        "wall_seconds": round(seconds, 1),
        "time_vs_target": round(seconds / TARGET_SECONDS, 3),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),  # KiB on Linux
        "run_dir": str(work / name),
    }
    if code == 0:
        result["targets"] = learning_targets(read_metrics(work / name))
    return result


def all_met(run: dict[str, Any]) -> bool:
    """A run meets the benchmark: it finished in time and memory and met every learning target."""
    targets = run.get("targets", {}).get("met", {})
    return (
        run["exit_code"] == 0
        and run["wall_seconds"] <= TARGET_SECONDS
        and run["peak_rss_gib"] <= TARGET_GIB
        and bool(targets)
        and all(targets.values())
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run.seed values")
    ap.add_argument(
        "--keep-cache",
        action="store_true",
        help="reuse the user's student cache (leaves the bootstrap out of the time)",
    )
    ap.add_argument(
        "--bootstrap-seeds",
        type=int,
        nargs="+",
        default=None,
        help="bootstrap.seed per run, paired with --seeds (default: the config's student)",
    )
    ap.add_argument("--out", default=None, help="also append the summary JSON line to this file")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_args()
    if args.bootstrap_seeds is not None and len(args.bootstrap_seeds) != len(args.seeds):
        ap.error("--bootstrap-seeds needs one value per --seeds value")
    students = args.bootstrap_seeds or [None] * len(args.seeds)

    work = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    runs = []
    for seed, student in zip(args.seeds, students, strict=True):
        runs.append(run_once(seed, work, args.keep_cache, args.overrides, student))
        print(json.dumps(runs[-1]), flush=True)
    summary = {
        "bench": "quickstart",
        "model": "bootstrap-student",
        **machine(),
        "fresh_cache": not args.keep_cache,
        "overrides": args.overrides,
        "bootstrap_seeds": args.bootstrap_seeds,
        "target_seconds": TARGET_SECONDS,
        "target_gib": TARGET_GIB,
        "runs": runs,
        "runs_meeting_all": sum(all_met(r) for r in runs),
        "targets_met": all(all_met(r) for r in runs),
    }
    emit(summary, args.out)
    print("targets met in every run" if summary["targets_met"] else "targets NOT met in every run")
    return 0 if summary["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
