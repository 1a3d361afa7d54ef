"""`train.grpo`: TRL's names and defaults, and the checks that keep GRPO from starting on a config
it cannot learn from."""

from __future__ import annotations

import pytest
from trl import GRPOConfig as TrlGRPOConfig

from mbt_online.config import ConfigError, load_config
from mbt_online.config.grpo import GRPOConfig


def test_off_by_default_with_trls_defaults_where_trl_has_the_knob():
    g = load_config(None).train.grpo
    assert g.enabled is False
    trl = TrlGRPOConfig(output_dir="unused", use_cpu=True)
    for name in ("loss_type", "beta", "epsilon", "scale_rewards", "num_iterations"):
        assert getattr(g, name) == getattr(trl, name), name
    assert g.mask_truncated_completions is trl.mask_truncated_completions


def test_every_field_has_help_text():
    missing = [n for n, f in GRPOConfig.model_fields.items() if not f.description]
    assert missing == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.samples=1"], "rollout.samples >= 2"),
        (["rollout.temperature=0"], "rollout.temperature > 0"),
        (
            ["engine.backend=vllm-serve", "engine.serve.args=[--logprobs-mode, raw_logprobs]"],
            "engine.serve.args sets --logprobs-mode raw_logprobs",
        ),
        (["train.grpo.epsilon=0.3", "train.grpo.epsilon_high=0.2"], "epsilon_high"),
        (["train.grpo.loss_type=ppo"], "train.grpo.loss_type"),
        (["train.grpo.reward.overlong_weight=0.5"], "train.grpo.reward.overlong_weight"),
    ],
)
def test_configs_grpo_cannot_learn_from_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["train.grpo.enabled=true", *overrides])


def test_an_unknown_grpo_key_is_refused_naming_it():
    with pytest.raises(ConfigError, match="train.grpo.lerning_rate"):
        load_config(None, ["train.grpo.lerning_rate=1e-5"])
