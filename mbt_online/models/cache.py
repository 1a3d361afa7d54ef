"""The user-level cache shared by runs: pretrained students (`models.pretrained`) and the built
bootstrap students of the quickstart (`sim.bootstrap`), each in its own subfolder.

One root for both, so one variable moves (or one `rm -r` clears) everything mbt-online keeps
between runs.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MBT_ONLINE_CACHE"


def cache_root() -> Path:
    """`$MBT_ONLINE_CACHE`, else `$XDG_CACHE_HOME/mbt-online`, else `~/.cache/mbt-online`."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mbt-online"
