"""scripts/compare_table.py reads the sweep's registered endpoint and tables every member against
its control, with numbers from the paired test (hand-made runs with known answers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from paths import REPO
from rows import _row

from mbt_online.config import dump_config, load_config
from mbt_online.rundir import save_rows, stage_dir, write_round_metrics

sys.path.insert(0, str(REPO / "scripts"))
import compare_table  # noqa: E402

N = 40


def make_run(root: Path, name: str, right: int, rounds: int = 1, slips: float = 0.0) -> None:
    """A run whose last round got the first `right` of N questions right."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    dump_config(load_config(None, [f"run.name={name}"]), run_dir / "config.yaml")
    for r in range(rounds + 1):
        rows = [_row(f"q{i}", r == rounds and i < right, 40) for i in range(N)]
        save_rows(rows, stage_dir(run_dir, r, "eval"))
        write_round_metrics(run_dir, {"round": r, "eval/slips_caught": slips, "train/sft_rows": 7})


def test_the_endpoint_report_names_the_registered_comparison_and_tables_every_member(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path, f"mbt-r-s{seed}", 30, slips=0.5 * seed)
        make_run(tmp_path, f"self-s{seed}", 20)
        make_run(tmp_path, f"base-s{seed}", 0, rounds=0)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "base: base.yaml\nendpoint:\n  metric: eval/accuracy\n  treatment: mbt-r\n"
        "  control: self\n  secondary:\n    - {metric: eval/mean_tokens}\n"
        "    - {metric: eval/nope/accuracy}\n"
    )
    (tmp_path / "base.yaml").write_text("loop: {rounds: 1}\n")
    manifest = {
        "sweep_file": str(sweep_file),
        "members": [{"name": f"{g}-s{s}"} for g in ("mbt-r", "self", "base") for s in (1, 2)],
    }
    (tmp_path / "sweep.json").write_text(json.dumps(manifest))
    out = compare_table.endpoint_report(tmp_path)
    first = out.splitlines()[0]
    assert first.startswith("**Primary endpoint** (eval/accuracy, round 1, mbt-r minus self, 2")
    assert "+0.250 [" in first and first.endswith("*")  # 30 vs 20 of 40 right, on both seeds
    assert "- eval/mean_tokens, mbt-r minus self: +0.000" in out
    assert "nope" not in out  # a tier the evaluation does not have is left out, not invented
    assert "| mbt-r (2 seeds) | 0.750 [0.750, 0.750]; +0.250" in out
    assert "| base | 0.000" in out  # the untrained row: its round-0 means
    assert "| mbt-r (round 1) | - | 0.750 [0.500, 1.000] |" in out  # caught: mean [min, max]
    brief = compare_table.brief_report(tmp_path)
    assert brief.splitlines()[0] == first and "| mbt-r (2 seeds) | 0.750" in brief
    assert "base" not in brief and "mean_tokens" not in brief


def test_a_documents_marked_block_is_replaced_and_nothing_else(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- compare_table:runs -->\nold\n<!-- /compare_table -->\nafter\n")
    compare_table.write_block(doc, tmp_path / "runs", "new | table")
    assert doc.read_text() == (
        "before\n<!-- compare_table:runs -->\nnew | table\n<!-- /compare_table -->\nafter\n"
    )
