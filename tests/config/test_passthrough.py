"""TRL's and PEFT's names in the training sections: aliases for the knobs the schema names its own
way (either name, the config keeps the schema's; both is an error naming both), and the checked
passthrough `train.{sft,dpo,grpo}.trl` / `train.lora.peft` (unknown names refused with the close
matches, fields the project sets refused with the reason, wrong types refused), all at load."""

from __future__ import annotations

import pytest
import yaml

from mbt_online.config import ConfigError, LoraConfig, SFTConfig, load_config
from mbt_online.config.passthrough import PROJECT_SET, canonical_path, library_fields, problems
from mbt_online.config.schema import Config


def load(*overrides: str):
    return load_config(None, list(overrides))


def refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(*overrides)
    return str(e.value)


@pytest.mark.parametrize(
    ("theirs", "ours", "value"),
    [
        ("train.sft.num_train_epochs", "sft.epochs", 3.0),
        ("train.sft.per_device_train_batch_size", "sft.batch_size", 4),
        ("train.sft.gradient_accumulation_steps", "sft.grad_accum", 2),
        ("train.sft.lr_scheduler_type", "sft.lr_scheduler", "linear"),
        ("train.dpo.num_train_epochs", "dpo.epochs", 3.0),
        ("train.dpo.per_device_train_batch_size", "dpo.batch_size", 4),
        ("train.dpo.gradient_accumulation_steps", "dpo.grad_accum", 2),
        ("train.lora.lora_alpha", "lora.alpha", 16),
        ("train.lora.lora_dropout", "lora.dropout", 0.05),
        ("train.grpo.vllm_importance_sampling_mode", "grpo.importance_sampling_mode", "token_mask"),
        ("train.grpo.vllm_importance_sampling_clip_max", "grpo.importance_sampling_clip_max", 2.0),
    ],
)
def test_trl_and_peft_names_set_the_schemas_knob(theirs, ours, value):
    """Over the shipped quickstart, which sets `epochs` itself: the override by TRL's name wins."""
    cfg = load(f"{theirs}={value}")
    section, key = ours.split(".")
    assert getattr(getattr(cfg.train, section), key) == value


def test_both_names_of_one_knob_are_refused_naming_both(tmp_path):
    message = refused("train.sft.num_train_epochs=2", "train.sft.epochs=3")
    assert "train.sft.num_train_epochs" in message and "train.sft.epochs" in message
    # in one file
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump({"train": {"lora": {"alpha": 8, "lora_alpha": 16}}}))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "train.lora.lora_alpha" in str(e.value) and "alpha=8" in str(e.value)
    assert "give one" in str(e.value)
    # as the schema's classes are built
    with pytest.raises(ValueError, match="lora_alpha.*alpha"):
        LoraConfig(alpha=8, lora_alpha=16)


def test_a_file_layered_over_another_overrides_by_either_name(tmp_path):
    base, top = tmp_path / "base.yaml", tmp_path / "top.yaml"
    base.write_text(yaml.safe_dump({"train": {"sft": {"epochs": 1}}}))
    top.write_text(yaml.safe_dump({"train": {"sft": {"num_train_epochs": 4}}}))
    assert load_config([base, top]).train.sft.epochs == 4
    assert load_config([top, base]).train.sft.epochs == 1


def test_the_config_keeps_the_schemas_names():
    cfg = load("train.sft.num_train_epochs=3")
    dumped = cfg.model_dump()["train"]["sft"]
    assert dumped["epochs"] == 3 and "num_train_epochs" not in dumped
    assert SFTConfig(num_train_epochs=2).epochs == 2
    assert canonical_path(Config, ["train", "lora", "lora_dropout"]) == ["train", "lora", "dropout"]
    assert canonical_path(Config, ["train", "sft", "trl", "num_train_epochs"])[-1] == (
        "num_train_epochs"
    ), "inside a passthrough every name is the library's"


def test_the_passthrough_takes_any_other_field_by_its_own_name():
    cfg = load(
        "train.sft.trl.weight_decay=0.1",
        "train.dpo.trl.label_smoothing=0.1",
        "train.dpo.trl.lr_scheduler_type=linear",
        "train.grpo.trl.weight_decay=0.01",
        "train.lora.peft.use_rslora=true",
    )
    assert cfg.train.sft.trl == {"weight_decay": 0.1}
    assert cfg.train.dpo.trl == {"label_smoothing": 0.1, "lr_scheduler_type": "linear"}
    assert cfg.train.grpo.trl == {"weight_decay": 0.01}
    assert cfg.train.lora.peft == {"use_rslora": True}


def test_an_unknown_name_is_refused_naming_the_key_and_the_close_matches():
    message = refused("train.sft.trl.wieght_decay=0.1")
    assert "train.sft.trl.wieght_decay: not a field of trl.SFTConfig" in message
    assert "close matches: weight_decay" in message
    message = refused("train.lora.peft.use_rs_lora=true")
    assert "train.lora.peft.use_rs_lora" in message and "use_rslora" in message
    assert "no close match" in refused("train.dpo.trl.zzzzzz=1")


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("train.sft.trl.output_dir=elsewhere", "the stage's folder"),
        ("train.dpo.trl.report_to=[wandb]", "tracking"),
        ("train.sft.trl.seed=3", "run.seed"),
        ("train.sft.trl.learning_rate=0.1", "set it as train.sft.learning_rate"),
        ("train.sft.trl.num_train_epochs=2", "set it as train.sft.epochs"),
        ("train.dpo.trl.beta=0.2", "set it as train.dpo.beta"),
        ("train.grpo.trl.temperature=0.5", "rollout.temperature"),
        ("train.grpo.trl.vllm_mode=colocate", "engine"),
        ("train.grpo.trl.beta=0.1", "set it as train.grpo.beta"),
        ("train.lora.peft.lora_alpha=16", "set it as train.lora.alpha"),
        ("train.lora.peft.task_type=SEQ_CLS", "causal LM"),
    ],
)
def test_a_field_the_project_sets_is_refused_with_the_reason(override, reason):
    key = override.split("=")[0]
    message = refused(override)
    assert f"{key}: the project sets it" in message and reason in message


def test_a_value_of_the_wrong_type_is_refused_at_load():
    message = refused("train.sft.trl.weight_decay=heavy")
    assert "train.sft.trl.weight_decay" in message and "float" in message and "heavy" in message
    message = refused("train.lora.peft.bias=some")
    assert "train.lora.peft.bias" in message and "'lora_only'" in message


def test_a_container_is_left_to_the_library_which_coerces_some():
    """TRL's DPO takes a `loss_type` string for a one-loss list: not refused here."""
    cfg = load("train.dpo.trl.loss_type=ipo", "train.dpo.sft_weight=0")
    assert cfg.train.dpo.trl["loss_type"] == "ipo"


def test_a_dpo_loss_type_and_sft_weight_are_refused_together():
    message = refused("train.dpo.trl.loss_type=[ipo]", "train.dpo.sft_weight=0.5")
    assert "train.dpo.trl.loss_type" in message and "train.dpo.sft_weight" in message
    cfg = load("train.dpo.trl.loss_type=[ipo]", "train.dpo.sft_weight=0")
    assert cfg.train.dpo.trl["loss_type"] == ["ipo"]


def test_every_refusal_names_a_real_field_of_the_librarys_config():
    """A table entry no library field matches would be a typo that refuses nothing."""
    for target, refusals in PROJECT_SET.items():
        assert set(refusals) <= set(library_fields(target)), target


def test_an_empty_passthrough_imports_no_library():
    assert problems("no.SuchConfig", {}, "trl") == []
