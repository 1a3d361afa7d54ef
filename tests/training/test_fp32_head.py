"""TRL's SFT and DPO fused LM head in float32 under bf16 autocast (`train.fp32_lm_head`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl.trainer import dpo_trainer, sft_trainer

from mbt_online.config import TrainConfig
from mbt_online.training import fp32_head


@pytest.fixture(autouse=True)
def _trl_as_shipped():
    fp32_head.restore()
    yield
    fp32_head.restore()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 300, (2, 24), generator=gen)
    labels = ids.clone()
    labels[:, :8] = -100  # the prompt
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _model(model_dir: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():  # logits of a trained model's size: a random head's are near zero
        model.lm_head.weight.mul_(40.0)
    return model


def fused_log_probs(model_dir: Path, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probs the way SFTTrainer gets them: its module's `add_fused_lm_head`, bf16 autocast."""
    model = _model(model_dir)
    sft_trainer.add_fused_lm_head(model, outputs=("log_probs",))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(**batch, fused_lm_head=True).log_probs.float()


def float32_head_log_probs(model_dir: Path, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference: the same bf16 body, the head projected and normalised in float32."""
    model = _model(model_dir)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model.model(input_ids=batch["input_ids"]).last_hidden_state[:, :-1]
        logits = hidden.float() @ model.lm_head.weight.float().T
        labels = batch["labels"][:, 1:]
        picked = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(labels == -100, 0.0)


def test_the_installed_head_scores_in_float32_under_autocast(tiny_model_dir, batch):
    reference = float32_head_log_probs(tiny_model_dir, batch)
    shipped_error = (fused_log_probs(tiny_model_dir, batch) - reference).abs().max()
    assert fp32_head.install() and fp32_head.install() and fp32_head.installed()
    fixed_error = (fused_log_probs(tiny_model_dir, batch) - reference).abs().max()
    assert fixed_error < 1e-4 < shipped_error  # TRL's own SFT head rounds its logits to bf16
    for trainer_module in (sft_trainer, dpo_trainer):  # what each trainer calls in __init__
        assert trainer_module.add_fused_lm_head.keywords == {"cast_lm_head_to_fp32": True}
    fp32_head.restore()
    assert not fp32_head.installed()
    assert (fused_log_probs(tiny_model_dir, batch) - reference).abs().max() == shipped_error


@pytest.mark.parametrize(
    ("fp32", "installed"),
    [(True, True), (False, False), (None, not torch.cuda.is_available())],  # null: CPU only
)
def test_trainers_built_for_a_round_follow_the_config(tiny_model_dir, tmp_path, fp32, installed):
    from mbt_online.training import trainer as train

    cfg = TrainConfig(method="full", fp32_lm_head=fp32)
    pairs = Dataset.from_list([{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    trainer = train.dpo_trainer(tiny_model_dir, None, pairs, cfg, 0, tmp_path, bf16=True)
    assert trainer is not None and fp32_head.installed() is installed
