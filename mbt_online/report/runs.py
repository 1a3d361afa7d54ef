"""Finding and reading runs for the report: run directories, sweeps and wandb offline runs, and the
seed members of a sweep merged into one series (mean and interval per round).

A run directory is the source of truth (metrics.jsonl and the per-round artifacts); a wandb
offline run is read for runs made elsewhere (`report.wandb_log`), with its round metrics only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mbt_online.report.wandb_log import read_wandb_file, wandb_log_files
from mbt_online.rundir.metrics_file import METRICS_FILE, read_metrics
from mbt_online.rundir.state import STATE_FILE


@dataclass
class RunData:
    """What the report knows of one run (or one seed group), whatever it was read from."""

    name: str
    path: Path
    source: str  # "run" (a run directory), "wandb" (an offline wandb run), "seeds" (merged)
    rows: list[dict[str, Any]]  # one per round, sorted by round
    config: dict[str, Any] = field(default_factory=dict)  # dotted keys
    members: list[RunData] = field(default_factory=list)  # the seed runs of a "seeds" group

    @property
    def rounds(self) -> list[int]:
        return [int(r["round"]) for r in self.rows]


def find_runs(paths: list[Path]) -> list[RunData]:
    """Runs under the given paths: run dirs, sweep dirs, wandb offline runs or their parents."""
    runs: list[RunData] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"report: no such file or directory: {p}")
        found = _runs_at(p)
        if not found:
            raise FileNotFoundError(f"report: {p} holds no run (metrics.jsonl), sweep or wandb run")
        runs.extend(found)
    return _unique_names(runs)


def _runs_at(p: Path) -> list[RunData]:
    if p.is_file() and p.suffix == ".wandb":
        return [read_wandb_runs([p])[0]]
    if _is_run_dir(p):
        return [read_run_dir(p)]
    members = _sweep_members(p)
    if members:
        return [read_run_dir(m) for m in members]
    wandb_files = wandb_log_files(p)
    return read_wandb_runs(wandb_files) if wandb_files else []


def _is_run_dir(p: Path) -> bool:
    return p.is_dir() and ((p / METRICS_FILE).exists() or (p / STATE_FILE).exists())


def _sweep_members(p: Path) -> list[Path]:
    """Member run dirs in the sweep's own order (sweep.json), else every run dir below, sorted."""
    manifest = p / "sweep.json"
    if manifest.exists():
        names = [m["name"] for m in json.loads(manifest.read_text()).get("members", [])]
        listed = [p / n for n in names if _is_run_dir(p / n)]
        others = sorted(d for d in p.iterdir() if _is_run_dir(d) and d.name not in names)
        return listed + others
    return sorted(d for d in p.iterdir() if _is_run_dir(d)) if p.is_dir() else []


def _unique_names(runs: list[RunData]) -> list[RunData]:
    """Two sweeps both have a `base`: qualify clashing names with their parent directory."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in runs:
        if counts[r.name] > 1:
            r.name = f"{r.path.parent.name}/{r.name}"
    seen: set[str] = set()
    for i, r in enumerate(runs):  # still equal (same parent name): number them
        if r.name in seen:
            r.name = f"{r.name}#{i + 1}"
        seen.add(r.name)
    return runs


def read_run_dir(run_dir: Path) -> RunData:
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").exists():
        config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    return RunData(
        name=str(config.get("run.name") or run_dir.name),
        path=run_dir,
        source="run",
        rows=merge_rounds(read_metrics(run_dir)),
        config=config,
    )


def merge_rounds(rows: list[dict[str, Any]], round_key: str = "round") -> list[dict[str, Any]]:
    """One row per round (later values win), numeric values only, sorted by round."""
    by_round: dict[int, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row.get(round_key), int | float):
            continue
        r = int(row[round_key])
        merged = by_round.setdefault(r, {"round": r})
        merged.update({k: v for k, v in row.items() if is_number(v) and not k.startswith("_")})
        merged["round"] = r
    return [by_round[r] for r in sorted(by_round)]


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def read_wandb_runs(files: list[Path]) -> list[RunData]:
    """One RunData per wandb run id: a resumed run may have one offline dir per process."""
    runs: dict[str, RunData] = {}
    raw_rows: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(files, key=lambda f: f.parent.name):  # offline-run-<date>_<time>: time order
        info, history = read_wandb_file(path)
        config = flatten({k: v for k, v in info["config"].items() if k != "_wandb"})
        run = runs.setdefault(
            info["id"],
            RunData(
                name=str(info["name"] or info["id"]), path=path.parent, source="wandb", rows=[]
            ),
        )
        run.config.update(config)
        raw_rows.setdefault(info["id"], []).extend(history)
    for run_id, run in runs.items():
        rows = raw_rows[run_id]
        # the loop logs "round"; other writers (TRL steps) do not, and then each step is a round
        key = "round" if any("round" in r for r in rows) else "_step"
        run.rows = merge_rounds(rows, key)
    return list(runs.values())


# ---------------------------------------------------------------------------------------------
# seeds: `<member>-s<seed>` runs of a sweep become one series with an interval per round


def seed_groups(runs: list[RunData]) -> list[RunData]:
    """Runs in order, with each group of two or more seed members merged into one series.

    The merged rows carry `<key>` (the mean over seeds), `<key>_ci_low`, `<key>_ci_high` and
    `<key>_n` (helper contract: `report.compare.merge_seeds`); the members stay reachable for the
    per-round samples."""
    try:
        from mbt_online.report.compare import group_of, merge_seeds
    except ImportError:  # an install without `compare`: each seed member stays its own series
        return runs
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        groups.setdefault(group_of(run.name), []).append(run)
    out: list[RunData] = []
    for name, members in groups.items():
        if len(members) < 2 or any(m.source != "run" for m in members):
            out.extend(members)
            continue
        out.append(
            RunData(
                name=f"{name} (n={len(members)})",
                path=members[0].path.parent,
                source="seeds",
                rows=merge_seeds([m.rows for m in members]),
                config=members[0].config,
                members=members,
            )
        )
    return out
