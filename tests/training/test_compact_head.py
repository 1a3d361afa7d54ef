"""TRL's fused LM head, compacted to the labelled positions on the CPU: same numbers, fewer rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl.trainer import utils as trl_utils

from mbt_online.config import TrainConfig
from mbt_online.training import compact_head

OUTPUTS = ("entropy", "is_top1")  # what SFT asks of the head besides the log-probs


@pytest.fixture(autouse=True)
def _trl_as_shipped():
    compact_head.restore()
    yield
    compact_head.restore()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Two rows of different lengths, right-padded; the first 9 (or 5) tokens are prompt."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 300, (2, 24), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    labels = ids.clone()
    labels[0, :9] = -100
    labels[1, :5] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def fused_pass(model_dir: Path, batch: dict[str, torch.Tensor]) -> tuple[dict, dict, list[int]]:
    """Loss, per-token outputs and gradients of one fused-head pass; the rows the kernel scored."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model, outputs=OUTPUTS)
    scored: list[int] = []
    kernel = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            scored.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    trl_utils._ChunkedLogProbFunction = Spy
    try:
        out = model(**batch, fused_lm_head=True)
    finally:
        trl_utils._ChunkedLogProbFunction = kernel
    out.loss.backward()
    values = {
        "loss": out.loss.detach(),
        "log_probs": out.log_probs.detach(),
        "entropy": out.entropy.detach(),
        "is_top1": out.is_top1,
    }
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return values, grads, scored


def test_compacting_scores_only_labelled_positions_and_changes_no_number(tiny_model_dir, batch):
    full, full_grads, full_rows = fused_pass(tiny_model_dir, batch)
    assert compact_head.install()
    compact, compact_grads, compact_rows = fused_pass(tiny_model_dir, batch)

    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert full_rows == [2 * 23]  # TRL's CPU path: every shifted position, prompt and padding
    assert compact_rows == [labelled] and labelled == 15 + 12  # tokens 9-23 and 5-16
    for key in full:
        torch.testing.assert_close(compact[key], full[key], rtol=1e-5, atol=1e-6, msg=key)
    assert full["loss"] > 0
    assert compact_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(compact_grads[name], full_grads[name], rtol=1e-4, atol=1e-6)


def test_install_is_idempotent_and_restore_puts_trls_decision_back():
    shipped = trl_utils._use_triton
    assert not shipped(torch.device("cpu"))  # the waste being fixed: TRL does not compact on CPU
    assert compact_head.install() and compact_head.install()
    assert trl_utils._use_triton(torch.device("cpu"))
    assert compact_head.installed()
    compact_head.restore()
    assert trl_utils._use_triton is shipped and not compact_head.installed()


def test_trl_without_a_fused_head_is_left_alone(monkeypatch, caplog):
    monkeypatch.delattr(trl_utils, "_use_triton")
    assert compact_head.install() is False
    assert "scores every position" in caplog.text


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_trainers_built_for_a_round_use_the_compact_head(tiny_model_dir, tmp_path, stage):
    from mbt_online.training import trainer as train

    cfg = TrainConfig(method="full")
    if stage == "sft":
        rows = Dataset.from_list([{"prompt": "Q?", "completion": "A."}])
        trainer = train.sft_trainer(tiny_model_dir, rows, cfg, 0, tmp_path)
    else:
        pairs = Dataset.from_list([{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
        trainer = train.dpo_trainer(tiny_model_dir, None, pairs, cfg, 0, tmp_path)
    assert trainer is not None and compact_head.installed()
