"""Every path the tests read, defined once. Tests are hermetic: they read the dev samples that ship
inside the package and the fixtures under tests/data, never a folder outside the repository."""

from __future__ import annotations

from pathlib import Path

from mbt_online.tasks.base import PACKAGE_DIR, SAMPLES_DIR

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"  # test-only fixtures
HUB_ROWS = TEST_DATA / "hub"  # the first sample rows of each benchmark in its hub layout
# chat completion bodies recorded from `vllm serve`, with sampled token ids and log-probs
SERVED_REPLIES = TEST_DATA / "served"
# 2WikiMultihopQA rows with `answer_id`s and the official `id_aliases.json` beside them
TWOWIKI_IDS = TEST_DATA / "2wikimultihopqa"
CONFIGS_DIR = PACKAGE_DIR / "configs"
PAPER_SWEEP = CONFIGS_DIR / "sweeps" / "paper-baselines.yaml"

# The shipped dev samples (mbt_online/samples), one file per benchmark in its official layout.
SAMPLE_NAMES = {
    "hotpotqa": "hotpotqa/hotpot_dev_distractor_sample.json",
    "musique": "musique/musique_ans_v1.0_dev_sample.jsonl",
    "2wikimultihopqa": "2wikimultihopqa/dev_sample.json",
}
SAMPLES = {name: SAMPLES_DIR / rel for name, rel in SAMPLE_NAMES.items()}
