"""What a run started from, and the check that it is still what a resume would continue from.

A run records in `state.json` the sha256 of its `config.yaml` as written, a fingerprint (size and
sha256) of every data file its config reads, the package version and the versions of the libraries
its numbers depend on (`versions.LIBRARIES`: torch, transformers, trl, peft, vllm, datasets,
accelerate, wandb). `--resume` compares them before any work: a config cut short by a full disk
still parses (the schema's defaults fill the gap, quietly changing the experiment), a data file
replaced under the same name trains on other questions, and another code or library version may
train or score differently (an accelerate release once changed an error path between two CI
runs); each is refused, naming the file or the library and both versions, unless the change is
deliberate (`allow_changed`), in which case the record is renewed and the accepted changes are
kept in it (`accepted_changes`).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mbt_online.config import Config, ConfigError
from mbt_online.rundir.state import STATE_FILE, RunState
from mbt_online.versions import library_versions

log = logging.getLogger("mbt_online")

PACKAGE = "mbt-online"
CONFIG_FILE = "config.yaml"
ALLOW_HINT = "if the change is deliberate, resume with --allow-changed"


class StateError(ConfigError):
    """`state.json` is not JSON or fails its schema: resuming from it could redo or skip work."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(
            f"resume: {path}: {problem}; the run's progress cannot be trusted (restore the file "
            "or start the run anew)"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(written: str, path: Path) -> dict[str, Any]:
    """Size and sha256 of a data file, or of every file in a data folder (a `datasets` folder),
    names included; `written` is the path as the config gives it."""
    if path.is_dir():
        digest, size = hashlib.sha256(), 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
            size += f.stat().st_size
        return {"path": written, "size": size, "sha256": digest.hexdigest()}
    return {"path": written, "size": path.stat().st_size, "sha256": sha256_file(path)}


def data_files(cfg: Config) -> dict[str, tuple[str, Path]]:
    """Every data file the config reads: config key -> (path as written, resolved path). A
    2WikiMultihopQA split's alias file (named, or found beside its data) moves its scores, so it
    is one of them."""
    from mbt_online.tasks.base import resolve_data_path
    from mbt_online.tasks.twowiki import NAME, aliases_file

    out = {
        f"data.{name}.path": (s.path, resolve_data_path(s.path))
        for name, s in cfg.data.splits()
        if s.path
    }
    for name, s in cfg.data.splits():
        key = f"data.{name}.aliases_path"
        if s.dataset == NAME and s.aliases_path:
            out[key] = (s.aliases_path, resolve_data_path(s.aliases_path))
        elif s.dataset == NAME and (found := aliases_file(s.path)) is not None:
            out[key] = (str(found), found)
    return out


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def record(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The integrity record of a run whose config.yaml is written: what `state.json` keeps."""
    return {
        "config_sha256": sha256_file(Path(run_dir) / CONFIG_FILE),
        "data_files": {k: fingerprint(w, p) for k, (w, p) in data_files(cfg).items()},
        "package_version": package_version(),
        "library_versions": library_versions(),
        "accepted_changes": [],
    }


def config_change(state: RunState, run_dir: Path) -> str | None:
    """Why config.yaml no longer matches its recorded hash (None when it does, or when the run
    predates the record). Checked on the raw bytes, before the file is parsed."""
    if state.integrity is None:
        return None
    path = Path(run_dir) / CONFIG_FILE
    if sha256_file(path) != state.integrity["config_sha256"]:
        return f"{path} changed since the run recorded it in {STATE_FILE} (a different sha256)"
    return None


def other_changes(state: RunState, cfg: Config) -> list[str]:
    """Data files, package and library versions that no longer match the record, each naming
    the file or the library with both versions."""
    if state.integrity is None:
        return []
    recorded: dict[str, Any] = state.integrity["data_files"]
    now = data_files(cfg)
    problems = []
    for key in sorted(set(recorded) | set(now)):
        if key not in now or key not in recorded:
            problems.append(f"{key}: the data files read changed ({STATE_FILE} has another set)")
            continue
        written, path = now[key]
        if not path.exists():
            problems.append(f"{key}: {path} is gone")
        elif fingerprint(written, path) != recorded[key]:
            problems.append(f"{key}: {path} changed since the run started (size or sha256)")
    version, was = package_version(), state.integrity["package_version"]
    if version != was:
        problems.append(f"{STATE_FILE}: the run started with {PACKAGE} {was}, this is {version}")
    return problems + library_changes(state.integrity.get("library_versions"))


def library_changes(recorded: dict[str, str | None] | None) -> list[str]:
    """The libraries whose installed version differs from the record (a run recorded before
    library versions were kept checks none)."""
    if recorded is None:
        return []
    now = library_versions()
    return [
        f"{STATE_FILE}: the run started with {library} {_shown(recorded.get(library))}, "
        f"this is {library} {_shown(now.get(library))}"
        for library in sorted(set(recorded) | set(now))
        if recorded.get(library) != now.get(library)
    ]


def _shown(version: str | None) -> str:
    return version if version is not None else "(not installed)"


def refuse_or_renew(
    problems: list[str], state: RunState, cfg: Config, run_dir: Path, allow_changed: bool
) -> None:
    """Refuse a resume over `problems`, or (allow_changed) log them and record the run anew."""
    if not problems:
        return
    if not allow_changed:
        raise ConfigError(f"resume: {'; '.join(problems)}; {ALLOW_HINT}")
    for problem in problems:
        log.warning("resuming over a deliberate change: %s", problem)
    renew(state, cfg, run_dir, accepted=problems)


def renew(
    state: RunState, cfg: Config, run_dir: Path, accepted: list[str] | tuple[str, ...] = ()
) -> None:
    """Record the run's current config, data, package and library versions as what it continues
    from; the `accepted` changes join the record's list of them, dated."""
    before = (state.integrity or {}).get("accepted_changes") or []
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state.integrity = record(cfg, run_dir)
    state.integrity["accepted_changes"] = [*before, *(f"{when} {a}" for a in accepted)]
    state.save()
