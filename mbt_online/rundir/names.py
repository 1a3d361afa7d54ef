"""Names that become paths: a run's name, a sweep member's, each one directory under its parent."""

from __future__ import annotations

import re

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
