"""Read-only and full places for a child process only: a private mount namespace (Linux, root),
then a read-only bind mount of a folder or a small tmpfs over it. The mounts die with the child:
nothing is left mounted on the machine, whatever the test does.

As root, file modes do not stop a write (root passes every permission check), so a read-only
folder is a read-only mount, as a shared cache on a cluster is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def private_namespace() -> None:
    """This process's own mount table, so its mounts reach no other process."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")


def read_only(folder: Path) -> None:
    """`folder` read-only from now on (in this process's namespace)."""
    path = str(folder).encode()
    _check(_libc.mount(path, path, None, MS_BIND, None), "bind")
    _check(_libc.mount(b"none", path, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None), "remount ro")


def small_disk(folder: Path, size_kib: int) -> None:
    """An empty tmpfs of `size_kib` over `folder`: a disk that fills after that much."""
    opts = f"size={size_kib}k".encode()
    _check(_libc.mount(b"tmpfs", str(folder).encode(), b"tmpfs", 0, opts), "tmpfs")


def _can_mount() -> bool:
    if os.geteuid() != 0 or os.environ.get("MBT_MOUNTS_PROBE"):
        return False  # (the probe below imports this module: it must not probe again)
    with tempfile.TemporaryDirectory() as d:
        probe = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import mounts;"
            f"from pathlib import Path; mounts.private_namespace();"
            f"mounts.read_only(Path({d!r})); mounts.small_disk(Path({d!r}), 8)"
        )
        env = {**os.environ, "MBT_MOUNTS_PROBE": "1"}
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, timeout=60, env=env
        )
    return done.returncode == 0


CAN_MOUNT = _can_mount()
needs_mounts = pytest.mark.skipif(
    not CAN_MOUNT,
    reason="needs root with mount namespaces (unshare + mount) to make a read-only or small place",
)
