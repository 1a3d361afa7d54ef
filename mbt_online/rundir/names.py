"""Names that become paths: a run's name, a sweep member's, each one directory under its parent;
and the output paths a command is given, which must not replace what is not theirs."""

from __future__ import annotations

import re
from pathlib import Path

# one path component: no `/`, no `..`, not absolute, not empty, not hidden
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_safe_name(name: str) -> str:
    """Refuse a name that would place a run outside its folder (`../../x`, `/abs`) or nowhere;
    a pydantic validator (the schema names the key in its error)."""
    if not SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a safe directory name: one path component of letters, digits "
            "and . _ + -, starting with a letter or digit"
        )
    return name


def check_output_folder(out: Path, flag: str = "--out") -> Path:
    """A folder a command replaces whole (a `datasets` folder, written atomically): a new path,
    or a `datasets` folder written before. Never the working directory, one of its parents, the
    home folder or a folder holding anything else (a run directory, a project), which the swap
    would delete."""
    path = Path(out).expanduser()
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve():
        raise ValueError(f"{flag}: {out} is the working directory, one of its parents or home")
    if path.exists() and not (path.is_dir() and (path / "dataset_info.json").is_file()):
        raise ValueError(
            f"{flag}: {out} exists and is not a datasets folder written before; it would be "
            "replaced whole: name a new folder"
        )
    return path


def check_output_file(out: Path, suffixes: tuple[str, ...], flag: str = "--out") -> Path:
    """A file a command writes (replacing it): with one of `suffixes`, so it cannot be a run's
    own state.json, config.yaml or metrics.jsonl, and not a folder."""
    path = Path(out).expanduser()
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag}: {out} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ValueError(f"{flag}: {out} is a folder; name the file to write")
    return path
