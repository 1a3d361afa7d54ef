"""A sweep run on this machine: every member one after another in its own run directory, finished
members skipped and unfinished ones resumed, or (`--emit slurm`) the job-array scripts written
instead. Every member's config is checked before the first one starts.

Several processes may run one sweep directory (two `sweep` commands, a sweep beside a `train
--resume` of a member or a SLURM task): the run lock (`rundir.lock`) lets one process run each
member; the others pass over a member held elsewhere, run the rest, and then wait for it, so
every member runs once and every process ends when the whole sweep has."""

from __future__ import annotations

import importlib
import json
import logging
import time
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
WAIT_POLL_S = 0.5  # how often a member another process runs is looked at


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
    labelled = [
        (out / m.name, cfg, f"[{i}/{len(members)}] {m.name}")
        for i, (m, cfg) in enumerate(zip(members, configs, strict=True), 1)
    ]
    busy = [item for item in labelled if not run_member(*item, wait=False)]
    for item in busy:  # members another process runs: theirs to finish (or ours, if it stops)
        run_member(*item)
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


def run_member(run_dir: Path, cfg: Config, label: str, *, wait: bool = True) -> bool:
    """Train one member, or resume it, or skip it; refuse a run dir made from another config.

    A member another process holds (a second `sweep` on the same directory, a `train --resume`
    of it, a SLURM task) is not run twice: with `wait` this waits for that process to end, then
    skips the member if it finished or resumes it if it stopped short; without, it returns False
    at once (the sweep comes back to it after its other members). True once the member is done."""
    from mbt_online import preemption
    from mbt_online.rundir.lock import RunLockedError, holder_pid, is_held

    loop = importlib.import_module("mbt_online.loop")  # lazy: vLLM/TRL only when a run starts
    said = False
    while True:
        status = run_status(run_dir)
        if status != "new":
            check_same_config(run_dir, cfg)
        if status == "finished":
            log.info("sweep %s: finished, skipping", label)
            return True
        if not is_held(run_dir):
            if run_status(run_dir) != status:  # its holder finished (or started) since the read
                continue
            log.info("sweep %s: %s", label, "resuming" if status == "unfinished" else "starting")
            try:
                loop.train(cfg, run_dir, resume=status == "unfinished")
                return True
            except RunLockedError:  # another process took it between the probe and the lock
                pass
            except ConfigError as e:  # RunExistsError: another process started it meanwhile
                if not isinstance(e, getattr(loop, "RunExistsError", ())):
                    raise
                continue
        if not wait:
            log.info("sweep %s: run by process %s; coming back to it", label, holder_pid(run_dir))
            return False
        if not said:
            log.info("sweep %s: run by process %s; waiting for it", label, holder_pid(run_dir))
            said = True
        preemption.check(f"{label} (waiting for process {holder_pid(run_dir)})")
        time.sleep(WAIT_POLL_S)


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
        "endpoint": sweep.endpoint,  # as registered in the sweep file before the runs
    }
    return write_json_atomic(sweep_dir / MANIFEST, manifest, sort_keys=False)
