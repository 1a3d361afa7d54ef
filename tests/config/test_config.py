"""Config: YAML + dotted overrides, and errors that name the key and what is allowed."""

from pathlib import Path

import pytest
import yaml
from paths import REPO
from pydantic import BaseModel

import mbt_online.config as config_module
from mbt_online.config import (
    CONFIG_DIR,
    Config,
    ConfigError,
    apply_overrides,
    dump_config,
    load_config,
    resolve_config,
    shipped_configs,
    to_flat_dict,
)
from mbt_online.config.docs import explained_yaml, markdown


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


# ---------------------------------------------------------------------------------------------
# shipped configs, by name; no silent defaults


def test_shipped_configs_are_package_data():
    assert Path(config_module.__file__).resolve().parents[1] / "configs" == CONFIG_DIR
    assert {"quickstart", "smollm2-mhqa-cpu", "sweeps/paper-baselines"} <= set(shipped_configs())


def test_default_is_the_packaged_quickstart_not_the_schema_defaults():
    cfg = load_config()
    assert cfg == load_config(CONFIG_DIR / "quickstart.yaml")
    assert cfg.run.name == "quickstart" != Config().run.name
    assert cfg.data != Config().data


def test_missing_packaged_default_is_an_error_not_the_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG", tmp_path / "quickstart.yaml")
    with pytest.raises(ConfigError, match="packaged default config is missing"):
        load_config()
    with pytest.raises(ConfigError, match="packaged default config is missing"):
        load_config(None, ["loop.rounds=1"])


@pytest.mark.parametrize("ref", ["smollm2-mhqa-cpu", "smollm2-mhqa-cpu.yaml"])
def test_config_by_shipped_name(ref):
    assert resolve_config(ref) == CONFIG_DIR / "smollm2-mhqa-cpu.yaml"
    assert load_config(ref) == load_config(CONFIG_DIR / "smollm2-mhqa-cpu.yaml")


def test_sweep_by_shipped_name():
    assert resolve_config("sweeps/paper-baselines") == CONFIG_DIR / "sweeps/paper-baselines.yaml"


def test_a_file_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("run: {name: mine}\n")
    assert load_config("quickstart.yaml").run.name == "mine"
    assert load_config("quickstart").run.name == "quickstart"


def test_unknown_name_lists_the_shipped_configs():
    with pytest.raises(ConfigError) as e:
        load_config("smollm3-mhqa")
    msg = str(e.value)
    assert "config file not found: smollm3-mhqa" in msg
    for name in shipped_configs():
        assert name in msg


# ---------------------------------------------------------------------------------------------
# descriptions and the generated reference


def _models(model: type[BaseModel], seen: set) -> list[type[BaseModel]]:
    """Every schema class reachable from `model`, including list items (data.train_more)."""
    if model in seen:
        return []
    seen.add(model)
    out = [model]
    for field in model.model_fields.values():
        for tp in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                out += _models(tp, seen)
    return out


def test_every_schema_field_has_a_description():
    models = _models(Config, set())
    assert len(models) > 15
    missing = [
        f"{m.__name__}.{name}"
        for m in models
        for name, field in m.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not missing, f"fields without a description: {missing}"


def test_docs_configuration_md_is_current():
    """docs/configuration.md is generated: run scripts/gen_config_docs.py after a schema change."""
    docs = REPO / "docs" / "configuration.md"
    assert docs.read_text() == markdown(), "stale: run .venv/bin/python scripts/gen_config_docs.py"


def test_reference_names_every_key_once():
    text = markdown()
    for key in to_flat_dict(Config()):
        if key.startswith(("reward.budgets", "data.train_more", "data.eval_more")):
            continue
        assert text.count(f"| `{key}` |") == 1, key


def test_explained_yaml_is_the_same_config():
    cfg = load_config(None, ["data.train_more=[{dataset: world, limit: 3}]", "tracking.tags=[a]"])
    text = explained_yaml(cfg)
    assert "# Run name, seed and directory." in text
    assert Config.model_validate(yaml.safe_load(text)) == cfg


def test_an_alias_bomb_is_refused_before_any_work_naming_the_file(tmp_path):
    """Nine levels of ten aliases: a few hundred bytes that a walk over the config would expand to
    a billion values (issue 36: minutes at 19 GB). Refused at load, in linear time."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nrun: {name: x, tags: *a9}\n")
    assert bomb.stat().st_size < 600
    with pytest.raises(ConfigError, match=r"bomb\.yaml: its aliases expand to more than 100,000"):
        load_config(bomb)


def test_a_config_nested_past_any_sane_depth_is_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("run: " + "[" * 150 + "]" * 150 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: nested"):
        load_config(deep)


def test_a_sweep_of_thousands_of_values_still_loads(tmp_path):
    from mbt_online.config import check_expanded_size

    check_expanded_size({"grid": {f"k{i}": list(range(50)) for i in range(100)}}, "sweep")
