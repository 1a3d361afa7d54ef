"""Atomic writes: a reader (or a resumed run) sees the old content or the new, never half of it.

Every file is written to a temporary file in the same folder and renamed over the target
(`os.replace` is atomic within one file system); every folder is filled beside its final place and
swapped in. The one home of this pattern: state files, metrics, caches and model folders use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a uniquely named temp file in the same folder, so
    concurrent writers of one path (threads filling one cache entry) never share a temp file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(
    path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = True
) -> Path:
    """`obj` as JSON (with a final newline when indented), written atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys)
    return write_text_atomic(path, text + "\n" if indent is not None else text)


def swap_dir(tmp: Path, out: Path, *, keep_theirs: Callable[[Path], bool] | None = None) -> Path:
    """Move the finished folder `tmp` to `out`.

    A previous `out` (a stale output, or one from a killed attempt) is first renamed aside and
    deleted only after the swap, so `out` is never half a folder. `keep_theirs` is for caches that
    several processes may fill at once with equal content: an `out` for which it is true, found
    before or at the swap, is kept and ours dropped, so a folder another process may already be
    reading is never moved.
    """
    if keep_theirs is not None and out.exists() and keep_theirs(out):
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    aside = None
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(aside / out.name)
    try:
        os.replace(tmp, out)
    except OSError:  # another process put an `out` there since the check above
        if keep_theirs is None or not keep_theirs(out):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return out


def write_dir_atomic(out: Path, write: Callable[[Path], Any]) -> Path:
    """Let `write` fill a sibling temp folder, then swap it in (a crash never leaves half a
    folder at `out`; the temp folder of a killed attempt is cleared by the next one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    return swap_dir(tmp, out)
