"""A fake run that logs TRAIN steps, with wandb offline: what the tracking tests and their
killed child run."""

from __future__ import annotations

import json
from pathlib import Path

from fakes import Fakes, FakeTrainer, tiny_config

SFT_STEPS, DPO_STEPS = 5, 3  # the TRAIN log lines the fake trainer writes per round


class LoggingTrainer(FakeTrainer):
    """The fake trainer, writing the TRAIN child's log to its contract: one JSON line per TRL
    log event, `{"stage", "step", <TRL keys>}`, in round-<r>/train/log_history.jsonl."""

    def train(self, job):
        trained = super().train(job)
        rows = [{"stage": "sft", "step": s, "loss": 2.0 / s} for s in range(1, SFT_STEPS + 1)]
        rows += [
            {"stage": "dpo", "step": s, "loss": 0.7 / s, "rewards/margins": 0.1 * s}
            for s in range(1, DPO_STEPS + 1)
        ]
        rows.append({"stage": "dpo", "step": DPO_STEPS, "train_runtime": 0.5, "train_loss": 0.4})
        (job.out_dir / "log_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return trained


class LoggingFakes(Fakes):
    def drivers(self, cfg, run_dir):
        d = super().drivers(cfg, run_dir)
        d.make_trainer = lambda: LoggingTrainer(self.calls, self.fail == "trainer")
        return d


def offline_config(tmp_path: Path):
    return tiny_config(
        tmp_path, **{"tracking.wandb_mode": "offline", "tracking.tags": "[paper,mbt-r]"}
    )
