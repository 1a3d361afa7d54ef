"""TRL's and PEFT's names reach TRL's and PEFT's configs: `train.sft.num_train_epochs=2` and
`train.sft.trl.weight_decay=0.1` in TRL's SFTConfig, the DPO / GRPO passthroughs in theirs (a DPO
`loss_type` replacing the one sft_weight sets), `train.lora.peft` in PEFT's LoraConfig."""

from __future__ import annotations

from mbt_online.config import load_config
from mbt_online.training.args import dpo_args, grpo_args, peft_config, sft_args


def train_cfg(*overrides: str):
    return load_config(None, list(overrides)).train


def test_sft_names_and_passthrough_reach_trls_config(tmp_path):
    cfg = train_cfg(
        "train.sft.num_train_epochs=2",
        "train.sft.per_device_train_batch_size=3",
        "train.sft.lr_scheduler_type=linear",
        "train.sft.trl.weight_decay=0.1",
        "train.sft.trl.packing=true",
    )
    args = sft_args(cfg, 0, tmp_path, False)
    assert args.num_train_epochs == 2 and args.per_device_train_batch_size == 3
    assert args.lr_scheduler_type == "linear"
    assert args.weight_decay == 0.1 and args.packing is True
    assert args.output_dir == str(tmp_path) and args.completion_only_loss is True, "the project's"
    assert sft_args(train_cfg(), 0, tmp_path, False).weight_decay == 0.0, "TRL's default"


def test_dpo_passthrough_reaches_trls_config(tmp_path):
    cfg = train_cfg(
        "train.dpo.gradient_accumulation_steps=2",
        "train.dpo.sft_weight=0",
        "train.dpo.trl.loss_type=[ipo]",
        "train.dpo.trl.label_smoothing=0.1",
        "train.dpo.trl.weight_decay=0.05",
    )
    args = dpo_args(cfg, 0, tmp_path, False)
    assert args.gradient_accumulation_steps == 2
    assert args.loss_type == ["ipo"] and args.label_smoothing == 0.1 and args.weight_decay == 0.05
    plain = dpo_args(train_cfg("train.dpo.sft_weight=0.5"), 0, tmp_path, False)
    assert plain.loss_type == ["sigmoid", "sft"] and plain.loss_weights == [1.0, 0.5]


def test_grpo_passthrough_reaches_trls_config(tmp_path):
    cfg = train_cfg(
        "train.grpo.trl.weight_decay=0.01",
        "train.grpo.trl.top_entropy_quantile=0.2",
        "train.grpo.vllm_importance_sampling_clip_max=2.5",
    )
    args = grpo_args(
        cfg, 0, tmp_path, False, num_generations=2, max_completion_length=16, temperature=1.0
    )
    assert args.weight_decay == 0.01 and args.top_entropy_quantile == 0.2
    assert args.vllm_importance_sampling_clip_max == 2.5


def test_peft_names_and_passthrough_reach_pefts_config():
    cfg = train_cfg(
        "train.lora.lora_alpha=16",
        "train.lora.lora_dropout=0.1",
        "train.lora.peft.use_rslora=true",
        "train.lora.peft.bias=lora_only",
    )
    peft = peft_config(cfg.lora)
    assert (peft.lora_alpha, peft.lora_dropout) == (16, 0.1)
    assert peft.use_rslora is True and peft.bias == "lora_only"
    assert peft.task_type == "CAUSAL_LM"
