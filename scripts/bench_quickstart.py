"""Benchmark the main job: wall time and peak memory of `mbt-online train` on the quickstart config.

Runs the job as a child process with a fresh student cache (so the bootstrap is included, as on a
new user's first `make quickstart`), then prints the measured time and peak resident memory beside
the targets (10 minutes, 4 GiB) as ratios. Usage:

    .venv/bin/python scripts/bench_quickstart.py [--keep-cache] [override ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 600.0
TARGET_GIB = 4.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--keep-cache",
        action="store_true",
        help="reuse the user's student cache (measures a second run)",
    )
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    env = dict(os.environ)
    if not args.keep_cache:
        env["MBT_ONLINE_CACHE"] = str(work / "cache")
    cmd = [
        sys.executable,
        "-m",
        "mbt_online",
        "train",
        f"run.runs_dir={work / 'runs'}",
        *args.overrides,
    ]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env)
    seconds = time.perf_counter() - start
    # ru_maxrss of waited-for children: the peak RSS of the job (vLLM runs in-process), in KiB
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    result = {
        "exit_code": proc.returncode,
        "wall_seconds": round(seconds, 1),
        "time_vs_target": round(seconds / TARGET_SECONDS, 3),
        "peak_rss_gib": round(peak_gib, 2),
        "memory_vs_target": round(peak_gib / TARGET_GIB, 3),
        "run_dir": str(work / "runs"),
    }
    print(json.dumps(result, indent=1))
    ok = proc.returncode == 0 and seconds <= TARGET_SECONDS and peak_gib <= TARGET_GIB
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
