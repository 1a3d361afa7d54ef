"""Atomic writes: a reader (or a resumed run) sees the old content or the new, never half of it.

Every file is written to a uniquely named temporary file in the same folder, flushed and fsynced,
and renamed over the target (`os.replace` is atomic within one file system; the fsync makes sure
the rename never lands before the bytes, so a power cut leaves the old file, not an empty one);
every folder is filled in a unique temp folder beside its final place and swapped in. Temp names
carry the writer's PID, so two processes never share one and a later writer clears only the
leftovers of dead ones. The one home of this pattern: state files, metrics, caches and model
folders use it.
"""

from __future__ import annotations

import errno
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
    tmp = _durable_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _durable_temp(path: Path, text: str) -> Path:
    """`text` written and fsynced to a uniquely named temp file beside `path` (removed again if
    the write fails)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a run's files get the mode `open` would give them (0666 less the
        # umask), so colleagues sharing a cluster file system can read a run as usual
        os.fchmod(fd, 0o666 & ~_umask())
        _write_synced(fd, text)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _umask() -> int:
    """The process umask (read by setting it and putting it back: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_synced(fd: int, text: str) -> None:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def create_text_exclusive(path: str | Path, text: str) -> Path:
    """Write `path` complete and durable, failing with `FileExistsError` if it already exists.

    The text goes to a temp file first and is hard-linked into place: `link` refuses an existing
    target, so of two processes creating one path exactly one wins, and neither a loser nor a
    reader ever sees a half-written file."""
    path = Path(path)
    tmp = _durable_temp(path, text)
    try:
        try:
            os.link(tmp, path)
        except OSError as e:
            if isinstance(e, FileExistsError) or e.errno not in _NO_LINK:
                raise
            _create_exclusive_without_link(path, text)  # a file system without hard links
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


# link() unsupported: EPERM (e.g. some FUSE and SMB mounts), EOPNOTSUPP / ENOTSUP, EXDEV
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


def _create_exclusive_without_link(path: Path, text: str) -> None:
    _write_synced(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), text)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    """Let `write` create and fill a folder (a path that does not exist yet, inside a sibling temp
    folder unique to this process), then swap it in. A crash never leaves half a folder at `out`;
    the temp folders of killed writers are cleared by the next writer of `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.tmp-"
    _clear_dead_writers(out.parent, prefix)
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))
    try:
        tmp = work / out.name
        write(tmp)
        return swap_dir(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _clear_dead_writers(folder: Path, prefix: str) -> None:
    """Remove temp folders `<prefix><pid>-*` whose writer process no longer exists."""
    for path in folder.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
