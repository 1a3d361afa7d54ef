"""Config: YAML + dotted overrides, and errors that name the key and what is allowed."""

from pathlib import Path

import pytest
import yaml

from mbt_online.config import (
    CONFIG_DIR,
    Config,
    ConfigError,
    apply_overrides,
    dump_config,
    load_config,
    to_flat_dict,
)


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config(
        write(tmp_path, {"loop": {"rounds": 1}}),
        [
            "loop.rounds=3",
            "teacher.mode=mbt-s",
            "train.dpo.enabled=false",
            "rollout.temperature=0.9",
            "tracking.tags=[a, b]",
        ],
    )
    assert cfg.loop.rounds == 3
    assert cfg.teacher.mode == "mbt-s"
    assert cfg.train.dpo.enabled is False
    assert cfg.rollout.temperature == pytest.approx(0.9)
    assert cfg.tracking.tags == ["a", "b"]


def test_unknown_key_names_full_path_and_allowed_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {}), ["train.dpo.betta=0.2"])
    msg = str(e.value)
    assert "train.dpo.betta: unknown key" in msg
    assert "beta" in msg and "margin" in msg  # the allowed keys are listed


def test_unknown_section_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer: unknown key; allowed keys here: .*train"):
        load_config(write(tmp_path, {"trainer": {"lr": 1}}))


def test_wrong_type_and_literal_name_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {}), ["loop.rounds=many", "teacher.mode=mbt-x"])
    msg = str(e.value)
    assert "loop.rounds" in msg and "'many'" in msg
    assert "teacher.mode" in msg and "'mbt-r'" in msg and "'none'" in msg


def test_out_of_range_values(tmp_path):
    with pytest.raises(
        ConfigError, match=r"rollout.top_p: Input should be less than or equal to 1"
    ):
        load_config(write(tmp_path, {}), ["rollout.top_p=1.5"])
    with pytest.raises(
        ConfigError, match=r"loop.rounds: Input should be greater than or equal to 0"
    ):
        load_config(write(tmp_path, {}), ["loop.rounds=-1"])


def test_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match="data.train.path is required"):
        load_config(write(tmp_path, {}), ["data.train.dataset=hotpotqa"])
    with pytest.raises(ConfigError, match="min_hops"):
        load_config(write(tmp_path, {}), ["world.min_hops=4", "world.max_hops=3"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        apply_overrides({}, ["loop.rounds"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"loop": 3}, ["loop.rounds=2"])


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, {}), ["loop.rounds=2", "reward.budgets={easy: 100}"])
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert to_flat_dict(again)["reward.budgets.easy"] == 100


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    assert isinstance(load_config(path), Config)


def test_lora_handoff_needs_lora_training(tmp_path):
    with pytest.raises(ConfigError, match="engine.handoff=lora needs train.method=lora"):
        load_config(write(tmp_path, {}), ["engine.handoff=lora"])
    assert load_config(write(tmp_path, {}), ["engine.handoff=lora", "train.method=lora"])
