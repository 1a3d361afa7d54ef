"""`engine.serve`: the defaults its field help documents and the values it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mbt_online.config import ConfigError, load_config
from mbt_online.config.serving import ServeConfig


def test_the_documented_defaults():
    serve = ServeConfig()
    assert serve.args == [] and serve.srun_args == []
    assert serve.port == 0  # a free port (or the SLURM-derived one)
    assert serve.startup_timeout_s == 900.0
    assert serve.request_timeout_s == 1800.0
    assert serve.max_retries == 2
    assert serve.concurrency == 64


def test_defaults_are_not_shared_between_instances():
    a, b = ServeConfig(), ServeConfig()
    a.args.append("--x")
    assert b.args == [] and ServeConfig().args == []


def test_good_values_pass():
    serve = ServeConfig(
        args=["--max-num-batched-tokens", "16384"],
        srun_args=["--cpus-per-task=16"],
        port=65535,
        startup_timeout_s=0.5,
        request_timeout_s=10,
        max_retries=0,
        concurrency=1,
    )
    assert serve.port == 65535 and serve.max_retries == 0 and serve.concurrency == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("port", -1),
        ("port", 65536),
        ("startup_timeout_s", 0),
        ("request_timeout_s", -5.0),
        ("max_retries", -1),
        ("concurrency", 0),
        ("args", "--flag"),  # a list, not a string
    ],
)
def test_out_of_range_values_are_refused(key: str, value):
    with pytest.raises(ValidationError) as err:
        ServeConfig(**{key: value})
    assert err.value.errors()[0]["loc"][0] == key


@pytest.mark.parametrize("field", ["args", "srun_args"])
@pytest.mark.parametrize("bad", ["--a\n--b", "x\r", "nul\0"])
def test_control_characters_in_arguments_are_refused(field: str, bad: str):
    with pytest.raises(ValidationError, match="holds a newline, carriage return or NUL"):
        ServeConfig(**{field: ["--ok", bad]})


def test_an_unknown_key_is_refused():
    with pytest.raises(ValidationError, match="extra"):
        ServeConfig(timeout=5)


def test_assignment_is_checked_too():
    serve = ServeConfig()
    with pytest.raises(ValidationError):
        serve.args = ["a\nb"]
    assert serve.args == []


def test_the_config_reaches_it_as_engine_serve():
    cfg = load_config(None, ["engine.serve.port=8123", "engine.serve.args=[--enforce-eager]"])
    assert cfg.engine.serve.port == 8123 and cfg.engine.serve.args == ["--enforce-eager"]
    assert load_config(None).engine.serve == ServeConfig()
    with pytest.raises(ConfigError, match=r"engine\.serve\.concurrency"):
        load_config(None, ["engine.serve.concurrency=0"])
