"""TRL's log events reach the live file as TRL logs them, on the contract the wandb mirror tails:
the same rows, in the same order, as the job's `log_history.jsonl` (real TRL, a tiny student)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbt_online.rundir.live_steps import LIVE_ENV, LiveReader, live_path
from mbt_online.training.rows import dpo_dataset, sft_dataset


@pytest.mark.slow
def test_trl_steps_are_written_live_as_log_history_holds_them(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mbt_online.config import TrainConfig
    from mbt_online.contracts import TrainJob
    from mbt_online.training.trainer import LOG_HISTORY, TrlTrainer

    cfg = TrainConfig(method="full", threads=1)
    cfg.sft.batch_size, cfg.sft.epochs, cfg.sft.warmup_ratio = 4, 1.0, 0.0
    cfg.dpo.batch_size, cfg.dpo.epochs = 4, 1.0
    prompt = [{"role": "user", "content": "Which city is the capital?"}]
    good = "<think>\nIt is Paris.\n</think>\n\n<answer>Paris</answer>"
    bad = "<think>\nIt is Rome.\n</think>\n\n<answer>Rome</answer>"
    job = TrainJob(
        str(tiny_model_dir),
        sft=sft_dataset([(prompt, good)] * 8),
        pairs=dpo_dataset([(prompt, good, bad)] * 8),
        out_dir=tmp_path,
        seed=0,
    )
    monkeypatch.setenv(LIVE_ENV, str(tmp_path))
    TrlTrainer(cfg).train(job)
    history = [json.loads(x) for x in (tmp_path / LOG_HISTORY).read_text().splitlines()]
    live = [row for s in ("sft", "dpo") for row in LiveReader(live_path(tmp_path, s)).new_rows()]
    assert [(r["stage"], r["step"]) for r in live] == [(r["stage"], r["step"]) for r in history]
    assert live == history  # the same floats, through JSON both ways
    assert sum("loss" in r for r in live) == 4  # 2 SFT + 2 DPO steps, then each summary


def test_nothing_is_written_live_when_nobody_watches(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from mbt_online.training.history import LiveLog

    monkeypatch.delenv(LIVE_ENV, raising=False)
    LiveLog("sft", tmp_path).on_log(
        None, SimpleNamespace(global_step=1, is_world_process_zero=False), None, {"loss": 1.0}
    )
    assert not any(tmp_path.iterdir())  # a rank other than 0 writes nothing
