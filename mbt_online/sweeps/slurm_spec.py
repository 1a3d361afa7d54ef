"""The `slurm:` blocks of a sweep: what each member asks SLURM for, checked before a script exists.

A sweep's `slurm:` holds the settings of the whole submission (`max_parallel`, `setup`, the warning
signal, the environment) and the default resources; `slurm.labels.<grid label>` and a member's own
`slurm:` refine the resources, in that order (later wins, `sbatch:` merged key by key). Members
with equal resources share one job array.

Everything here ends up in a batch script that a shell and `sbatch` read, so the checks are strict:
an option name must have SLURM's long-option syntax, and no value may hold a newline, a carriage
return or a NUL (a newline in an `#SBATCH` value would end the comment and run the rest as a
command). Every error names the key.
"""

from __future__ import annotations

import re
from typing import Any

from mbt_online.config import ConfigError

# resources: per sweep, per grid label, per member; each becomes an sbatch option
RESOURCE_OPTIONS = {
    "nodes": "nodes",
    "gpus_per_node": "gpus-per-node",
    "cpus_per_task": "cpus-per-task",
    "mem": "mem",
    "time": "time",
    "partition": "partition",
    "account": "account",
}
RESOURCE_KEYS = {*RESOURCE_OPTIONS, "sbatch"}
# the submission as a whole: only on the sweep's own `slurm:`
SWEEP_ONLY = {"max_parallel", "setup", "signal_seconds", "env", "labels"}
# options the emitter owns (an array per resource set, its log files, requeue on preemption)
OWNED_OPTIONS = {"array", "output", "error", "requeue", "no-requeue", "signal", "open-mode"}
# SLURM's long options: lower-case words joined by single dashes (`gpus-per-node`, `mail-type`)
OPTION_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FORBIDDEN = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL"}
DEFAULT_SIGNAL_SECONDS = 300


def check_value(value: Any, where: str) -> str:
    """A scalar as the text a script holds; refuse what would break out of its line."""
    if isinstance(value, dict | list) or value is None:
        raise ConfigError(f"{where}: expected a single value, got {value!r}")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    for char, name in FORBIDDEN.items():
        if char in text:
            raise ConfigError(f"{where}: the value {text!r} holds {name}, which SLURM cannot take")
    return text


def check_block(block: Any, where: str, *, sweep_level: bool) -> dict[str, Any]:
    """A `slurm:` block with every key and value checked; returns it unchanged."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping")
    allowed = RESOURCE_KEYS | (SWEEP_ONLY if sweep_level else set())
    unknown = sorted(str(k) for k in set(block) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    for key in RESOURCE_OPTIONS:
        if key in block:
            check_value(block[key], f"{where}.{key}")
    for key in ("nodes", "gpus_per_node", "cpus_per_task"):
        if key in block and not (isinstance(block[key], int) and block[key] >= 1):
            raise ConfigError(f"{where}.{key}: expected a whole number >= 1, got {block[key]!r}")
    sbatch_options(block.get("sbatch"), f"{where}.sbatch")
    if sweep_level:
        _check_sweep_settings(block, where)
    return block


def sbatch_options(value: Any, where: str) -> dict[str, str]:
    """Extra `#SBATCH` options as name -> text ('' for a bare flag); False drops an option."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of SLURM option: value")
    out: dict[str, str] = {}
    for key, val in value.items():
        name = str(key)
        if not OPTION_NAME.match(name):
            raise ConfigError(
                f"{where}: {name!r} is not a SLURM option name (lower-case words joined by "
                "dashes, as in `sbatch --gpus-per-node`)"
            )
        if name in OWNED_OPTIONS:
            raise ConfigError(
                f"{where}.{name}: set by the sweep (one array per resource set, requeue on "
                "preemption, logs under the sweep directory)"
            )
        if val is False:
            continue
        out[name] = "" if val is True else check_value(val, f"{where}.{name}")
    return out


def _check_sweep_settings(block: dict, where: str) -> None:
    if block.get("max_parallel") is not None:
        n = block["max_parallel"]
        if not (isinstance(n, int) and n >= 1):
            raise ConfigError(f"{where}.max_parallel: expected a whole number >= 1, got {n!r}")
    setup = block.get("setup") or []
    if not isinstance(setup, list):
        raise ConfigError(f"{where}.setup: expected a list of shell lines")
    for i, line in enumerate(setup):
        check_value(line, f"{where}.setup[{i}]")
    secs = block.get("signal_seconds", DEFAULT_SIGNAL_SECONDS)
    if not (isinstance(secs, int) and 0 < secs <= 65535):
        raise ConfigError(f"{where}.signal_seconds: expected 1..65535 seconds, got {secs!r}")
    env = block.get("env") or {}
    if not isinstance(env, dict):
        raise ConfigError(f"{where}.env: expected a mapping NAME: value")
    for name, val in env.items():
        if not ENV_NAME.match(str(name)):
            raise ConfigError(f"{where}.env: {name!r} is not an environment variable name")
        check_value(val, f"{where}.env.{name}")
    labels = block.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}.labels: expected a mapping grid label: resources")
    for label, res in labels.items():
        check_block(res, f"{where}.labels.{label}", sweep_level=False)


def merge_resources(*blocks: dict[str, Any] | None) -> dict[str, Any]:
    """Resources from the sweep, then each grid label, then the member: later keys win and
    `sbatch:` merges option by option."""
    out: dict[str, Any] = {}
    for block in blocks:
        for key, val in (block or {}).items():
            if key not in RESOURCE_KEYS:
                continue
            if key == "sbatch":
                out["sbatch"] = {**out.get("sbatch", {}), **(val or {})}
            else:
                out[key] = val
    return out


def resource_options(resources: dict[str, Any], where: str) -> dict[str, str]:
    """The `#SBATCH` options one member's resources make (the key its job array is grouped by)."""
    opts = {
        opt: check_value(resources[key], f"{where}.{key}")
        for key, opt in RESOURCE_OPTIONS.items()
        if key in resources
    }
    if int(resources.get("nodes", 1)) > 1:
        opts["ntasks-per-node"] = "1"  # one TRAIN launcher per node (srun starts it on each)
    opts.update(sbatch_options(resources.get("sbatch"), f"{where}.sbatch"))
    return opts
