"""The names of the data sets a split can read: the one list that the config schema, the command
line and the task registry all derive from. Import-free, so `config.py` can read it without
loading any task (the world task itself imports the config)."""

from __future__ import annotations

BENCHMARKS = ("hotpotqa", "musique", "2wikimultihopqa")  # real benchmarks, read from files
DATASETS = (*BENCHMARKS, "world")  # plus the generated synthetic world
