"""The `slurm:` blocks of a sweep, checked directly (test_slurm.py covers them through `expand`
and the emitted scripts)."""

from __future__ import annotations

import pytest

from mbt_online.config import ConfigError
from mbt_online.sweeps.slurm_spec import (
    check_block,
    check_value,
    merge_resources,
    resource_options,
    sbatch_options,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [("gpu", "gpu"), (4, "4"), (1.5, "1.5"), (True, "true"), (False, "false"), ("a b", "a b")],
)
def test_check_value_gives_the_scripts_text(value, text):
    assert check_value(value, "slurm.x") == text


@pytest.mark.parametrize(
    ("value", "what"),
    [("gpu\necho hi", "a newline"), ("a\rb", "a carriage return"), ("x\0", "a NUL")],
)
def test_check_value_refuses_what_breaks_the_line_naming_where(value, what):
    with pytest.raises(ConfigError) as err:
        check_value(value, "slurm.labels.big.partition")
    assert str(err.value).startswith("slurm.labels.big.partition: the value ")
    assert f"holds {what}, which SLURM cannot take" in str(err.value)


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_check_value_wants_a_single_value(value):
    with pytest.raises(ConfigError, match=r"^slurm\.time: expected a single value"):
        check_value(value, "slurm.time")


def test_check_block_returns_a_good_block_unchanged():
    block = {
        "partition": "batch",
        "nodes": 2,
        "sbatch": {"exclusive": True},
        "max_parallel": 3,
        "labels": {"big": {"gpus_per_node": 4}},
        "env": {"HF_HOME": "/scratch/hf"},
        "setup": ["module load cuda"],
        "signal_seconds": 120,
    }
    assert check_block(block, "slurm", sweep_level=True) is block
    assert check_block(None, "slurm", sweep_level=True) == {}


def test_check_block_refuses_unknown_keys_naming_them_and_the_allowed():
    with pytest.raises(ConfigError) as err:
        check_block({"gpu": 1, "time": "1:00:00", "queue": "x"}, "slurm", sweep_level=True)
    message = str(err.value)
    assert message.startswith("slurm: unknown keys ['gpu', 'queue']; allowed: [")
    assert "'gpus_per_node'" in message and "'max_parallel'" in message


def test_submission_settings_belong_to_the_sweep_level_only():
    member = {"max_parallel": 2, "nodes": 1}
    assert check_block(member, "slurm", sweep_level=True) is member
    with pytest.raises(ConfigError, match=r"members\[1\]\.slurm: unknown keys \['max_parallel'\]"):
        check_block(member, "members[1].slurm", sweep_level=False)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"nodes": 0}, "slurm.nodes: expected a whole number >= 1, got 0"),
        ({"cpus_per_task": "4"}, "slurm.cpus_per_task: expected a whole number >= 1, got '4'"),
        ({"max_parallel": 0}, "slurm.max_parallel: expected a whole number >= 1"),
        ({"signal_seconds": 0}, "slurm.signal_seconds: expected 1..65535 seconds"),
        ({"signal_seconds": 70000}, "slurm.signal_seconds: expected 1..65535 seconds"),
        ({"setup": "module load cuda"}, "slurm.setup: expected a list of shell lines"),
        ({"env": {"1X": "a"}}, "slurm.env: '1X' is not an environment variable name"),
        ({"labels": {"big": {"nodes": -1}}}, "slurm.labels.big.nodes: expected a whole number"),
        ({"sbatch": {"Mail_Type": "END"}}, "slurm.sbatch: 'Mail_Type' is not a SLURM option"),
        ({"sbatch": {"requeue": True}}, "slurm.sbatch.requeue: set by the sweep"),
        ({"sbatch": "--exclusive"}, "slurm.sbatch: expected a mapping"),
        ("gpu", "slurm: expected a mapping"),
    ],
)
def test_check_block_errors_name_the_key(block, message):
    with pytest.raises(ConfigError) as err:
        check_block(block, "slurm", sweep_level=True)
    assert message in str(err.value)


def test_sbatch_options_spell_flags_and_drop_false():
    opts = sbatch_options(
        {"exclusive": True, "mail-type": "END", "gres": "gpu:2", "constraint": False}, "x"
    )
    assert opts == {"exclusive": "", "mail-type": "END", "gres": "gpu:2"}
    assert sbatch_options(None, "x") == {}


def test_merge_resources_later_blocks_win_and_sbatch_merges_by_option():
    sweep = {
        "partition": "batch",
        "time": "02:00:00",
        "gpus_per_node": 1,
        "sbatch": {"exclusive": True, "mail-type": "END"},
        "max_parallel": 4,  # a submission setting, not a resource
        "env": {"A": "1"},
    }
    label = {"nodes": 2, "gpus_per_node": 4, "sbatch": {"mail-type": "FAIL"}}
    member = {"time": "00:30:00", "sbatch": {"exclusive": False}}
    assert merge_resources(sweep, None, label, member) == {
        "partition": "batch",
        "time": "00:30:00",
        "gpus_per_node": 4,
        "nodes": 2,
        "sbatch": {"exclusive": False, "mail-type": "FAIL"},
    }
    assert merge_resources() == {} and merge_resources(None, {}) == {}


def test_merge_resources_leaves_its_inputs_alone():
    sweep = {"sbatch": {"a": "1"}}
    merge_resources(sweep, {"sbatch": {"b": "2"}})
    assert sweep == {"sbatch": {"a": "1"}}


def test_resource_options_are_sbatch_long_options():
    resources = merge_resources(
        {"partition": "batch", "time": "02:00:00", "mem": "64G", "account": "proj"},
        {"nodes": 1, "gpus_per_node": 2, "cpus_per_task": 8, "sbatch": {"exclusive": True}},
    )
    assert resource_options(resources, "members[0].slurm") == {
        "nodes": "1",
        "gpus-per-node": "2",
        "cpus-per-task": "8",
        "mem": "64G",
        "time": "02:00:00",
        "partition": "batch",
        "account": "proj",
        "exclusive": "",
    }


def test_multi_node_resources_run_one_task_per_node():
    assert resource_options({"nodes": 3}, "m") == {"nodes": "3", "ntasks-per-node": "1"}
    assert "ntasks-per-node" not in resource_options({"nodes": 1}, "m")
    assert resource_options({}, "m") == {}


def test_resource_options_check_the_values_naming_the_member():
    with pytest.raises(ConfigError, match=r"^members\[2\]\.slurm\.partition: the value"):
        resource_options({"partition": "gpu\nrm -rf /"}, "members[2].slurm")
