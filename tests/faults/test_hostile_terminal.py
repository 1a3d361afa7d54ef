"""Hostile text is inert in a terminal, a log file and a wandb table (issue 36, item 3): rich
markup (`[bold red]`, `[link=...]`) prints as typed, ANSI / OSC escape sequences, carriage returns
and bidirectional overrides are written as visible escapes, and a log record stays one line (a
message cannot forge the next record)."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

from payloads import ESCAPES, TERMINAL_PAYLOADS, every
from rich.table import Table

from mbt_online import inert, tracking
from mbt_online.cli.common import InertConsole

# what a colour terminal gets from our own styles: SGR sequences only (ESC [ digits ; m)
OWN_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def shown(text: str) -> str:
    """`text` without our own styling: what is left must hold no escape of the payloads'."""
    return OWN_STYLE.sub("", text)


def test_the_cli_error_line_shows_a_hostile_path_as_text(tmp_path):
    """`fail` through a real process on a colour terminal (FORCE_COLOR): a data path that does
    not exist, carrying every terminal payload, is named in the error as the user typed it, and
    nothing in it drives the terminal."""
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    typed = str(tmp_path / " ".join(p for _, p in TERMINAL_PAYLOADS))  # as the command gets it
    out = subprocess.run(
        [sys.executable, "-m", "mbt_online", "data", "inspect", "--dataset", "hotpotqa"]
        + ["--path", typed],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "\x1b[1;31merror:" in out.stderr  # the terminal is styled: the test is not colourless
    text = shown(out.stderr)
    assert not any(e in text for e in ESCAPES), repr(text)
    assert inert.controls(typed) in text, repr(text)  # shown, its escapes visible
    assert "[bold red]LOUD[/bold red]" in text and "[link=https:/evil.example/]click" in text


def test_tables_and_prints_of_the_consoles_are_inert():
    buf = io.StringIO()
    con = InertConsole(file=buf, force_terminal=True, color_system="standard", width=400)
    table = Table(title=every("title "))
    table.add_column(every("column "))
    for _, p in TERMINAL_PAYLOADS:
        table.add_row(p)
    con.print(table)
    con.print(every("line "), highlight=False)
    text = shown(buf.getvalue())
    assert not any(e in text for e in ESCAPES), repr(text)
    assert "[bold red]LOUD[/bold red]" in text and "[link=https://evil.example/]" in text
    assert "\\x1b[31mRED" in text and "\\x1b]8;;" in text and "\\u202e" in text


def test_run_log_records_stay_one_line_without_escapes(tmp_path):
    tracking.setup_logging(tmp_path)
    log = logging.getLogger("mbt_online")
    try:
        log.warning("teacher said: %s", every())
        try:
            raise ValueError(every("boom "))
        except ValueError:
            log.exception("round 1: %s", "\x1b[2Jfailed")
    finally:
        for h in list(log.handlers):
            if getattr(h, "_mbt_run_log", False):
                log.removeHandler(h)
                h.close()
    lines = (tmp_path / tracking.LOG_FILE).read_text().splitlines()
    assert not any(e in line for line in lines for e in ESCAPES)
    assert lines[0].count(" WARNING ") == 1 and "forged log line" in lines[0]
    assert not any(line.startswith("2026-01-01") for line in lines)  # no forged record
    assert " ERROR round 1: \\x1b[2Jfailed" in lines[1] and lines[2].startswith("    Traceback")
    assert all(line.startswith("    ") for line in lines[2:])  # the traceback, indented


def test_wandb_table_cells_carry_no_control_character():
    rows = [
        {"example_id": p, "question": p, "completion": every(), "answer": p, "predicted": p}
        for _, p in TERMINAL_PAYLOADS
    ]
    columns, data = tracking.completions_table(rows, 1, len(rows))
    cells = [c for row in data for c in row if isinstance(c, str)]
    assert cells
    assert not any(re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", c) for c in cells)
    assert any("\n" in c for c in cells)  # a completion keeps its lines
    assert any("[bold red]LOUD" in c for c in cells)  # wandb shows markup as text itself
