"""Text from outside made inert where it is shown: model completions, data set fields, teacher
and endpoint replies, paths and names reach a terminal, a log file and wandb tables as text, never
as commands to them.

- `controls`: C0 / C1 control characters and DEL (ANSI escape sequences start with ESC, 0x1b, or
  the one-byte CSI, 0x9b) written as visible `\\x1b`-style escapes; newline and tab stay unless
  `keep_lines` is off (a one-line record: a log line must not forge the next one).
- `markup`: what rich would read as markup (`[bold red]`, `[link=...]`) escaped, after `controls`:
  for text interpolated into a string that `Console.print` renders.
- `InertFormatter`: a `logging.Formatter` whose records are one line each, with no escape
  sequence (the console and `run.log`).

The HTML report escapes for HTML itself (`report/`): these are the other three places.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# C0 but newline and tab, DEL, C1 (0x80-0x9f: 0x9b is a one-byte CSI on some terminals), and the
# bidirectional overrides that make a terminal show text in another order than it is written
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINES = re.compile("[\n\t]")


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return repr(c)[1:-1] if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def controls(text: Any, keep_lines: bool = True) -> str:
    """`text` with every control character written as its escape (`\\x1b`, `\\r`, ...); newline
    and tab kept unless `keep_lines` is False."""
    out = _CONTROLS.sub(_escape, str(text))
    return out if keep_lines else _LINES.sub(_escape, out)


def markup(text: Any, keep_lines: bool = True) -> str:
    """`text` safe to interpolate into a string that rich renders: no control character and no
    markup tag (`[bold]` is shown as `[bold]`)."""
    from rich.markup import escape

    return escape(controls(text, keep_lines))


def cell(value: Any) -> Any:
    """A wandb table cell: a string without control characters (newline and tab kept: a
    completion's lines), anything else as it is."""
    return controls(value) if isinstance(value, str) else value


class InertFormatter(logging.Formatter):
    """One line per record, no escape sequence: control characters and newlines in the message
    (a teacher's reply, a data row's id) are written as escapes; a traceback keeps its own
    lines below, escaped and indented (a newline in an exception's text cannot start a line
    that reads as a record of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\n    ")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return controls(super().formatMessage(record), keep_lines=False)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return controls(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return controls(super().formatStack(stack_info))
