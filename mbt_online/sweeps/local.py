"""A sweep run on this machine: every member one after another in its own run directory, finished
members skipped and unfinished ones resumed, or (`--emit slurm`) the job-array scripts written
instead. Every member's config is checked before the first one starts."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

from mbt_online.config import Config, ConfigError, read_yaml, to_flat_dict, validate
from mbt_online.rundir.atomic import write_json_atomic
from mbt_online.rundir.state import STATE_FILE, RunState
from mbt_online.sweeps.slurm import write_slurm
from mbt_online.sweeps.spec import (
    LAUNCH_KEYS,
    MANIFEST,
    Member,
    Sweep,
    default_sweep_dir,
    expand,
    load_sweep,
    member_config,
)

log = logging.getLogger("mbt_online")


def run_sweep(
    path: str | Path,
    sweep_dir: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    emit: str | None = None,
) -> Path:
    """Run every member locally, one after another (skip finished, resume unfinished), or with
    emit="slurm" write job-array scripts and submit.sh instead. Returns the sweep directory, or
    submit.sh.

    Every member's config is validated before the first one starts, so a typo in the last member
    does not surface hours into the sweep.
    """
    if emit not in (None, "slurm"):
        raise ConfigError(f"--emit {emit!r}: only 'slurm' is supported")
    sweep = load_sweep(path)
    members = expand(sweep, overrides)
    out = Path(sweep_dir) if sweep_dir is not None else default_sweep_dir(sweep)
    out = out.resolve()
    configs = [member_config(sweep, m, out) for m in members]
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, sweep, members, list(overrides))
    if emit == "slurm":
        return write_slurm(out, sweep, members, configs)
    for i, (member, cfg) in enumerate(zip(members, configs, strict=True), 1):
        run_member(out / member.name, cfg, f"[{i}/{len(members)}] {member.name}")
    log.info("sweep %s: all %d members finished in %s", sweep.name, len(members), out)
    return out


def run_status(run_dir: Path) -> str:
    """'new', 'unfinished' or 'finished', from the run's state.json (the loop's contract)."""
    if not (run_dir / STATE_FILE).exists():
        return "new"
    try:
        finished = RunState.load(run_dir).finished
    except json.JSONDecodeError:
        return "unfinished"
    return "finished" if finished else "unfinished"


def run_member(run_dir: Path, cfg: Config, label: str) -> None:
    """Train one member, or resume it, or skip it; refuse a run dir made from another config."""
    status = run_status(run_dir)
    if status != "new":
        check_same_config(run_dir, cfg)
    if status == "finished":
        log.info("sweep %s: finished, skipping", label)
        return
    log.info("sweep %s: %s", label, "resuming" if status == "unfinished" else "starting")
    loop = importlib.import_module("mbt_online.loop")  # lazy: vLLM/TRL only when a run starts
    loop.train(cfg, run_dir, resume=status == "unfinished")


def check_same_config(run_dir: Path, cfg: Config) -> None:
    """A rerun must not skip or resume a run made with other settings under the same name."""
    stored_path = run_dir / "config.yaml"
    if not stored_path.exists():
        return
    stored = to_flat_dict(validate(read_yaml(stored_path)))
    wanted = to_flat_dict(cfg)
    diff = sorted(
        k
        for k in set(stored) | set(wanted)
        if k not in LAUNCH_KEYS and stored.get(k) != wanted.get(k)
    )
    if diff:
        shown = ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now" for k in diff[:5])
        raise ConfigError(
            f"{run_dir} was made with a different config "
            f"({shown}{' ...' if len(diff) > 5 else ''}); "
            "use another --sweep-dir, or remove that run directory to redo it"
        )


def write_manifest(sweep_dir: Path, sweep: Sweep, members: list[Member], extras: list[str]) -> Path:
    """sweep.json: which runs belong to the sweep and in what order (the report reads it)."""
    manifest = {
        "name": sweep.name,
        "sweep_file": str(sweep.path),
        "base": str(sweep.base),
        "group": sweep.group,
        "extra_overrides": extras,
        "members": [{"name": m.name, "overrides": m.overrides} for m in members],
    }
    return write_json_atomic(sweep_dir / MANIFEST, manifest, sort_keys=False)
