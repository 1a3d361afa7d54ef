"""Names that become one directory under their parent: what passes and what is refused."""

from __future__ import annotations

import pytest

from mbt_online.rundir.names import check_safe_name


@pytest.mark.parametrize(
    "name",
    ["quickstart", "a", "0", "qwen3-4b_mbt-r.seed+1", "Run.2024-01-02", "x..y", "a-"],
)
def test_safe_names_pass_unchanged(name: str):
    assert check_safe_name(name) is name


@pytest.mark.parametrize(
    "name",
    [
        "",  # nowhere
        ".",
        "..",
        "../../x",  # outside its folder
        "/abs",
        "a/b",  # two components
        "a\\b",
        ".hidden",
        "-flag",  # would read as an option
        "_x",
        "+x",
        "with space",
        "tab\there",
        "new\nline",
        "x\0",
        "ünïcode",
        "name/",
    ],
)
def test_unsafe_names_are_refused_quoting_the_name(name: str):
    with pytest.raises(ValueError) as err:
        check_safe_name(name)
    message = str(err.value)
    assert message.startswith(f"{name!r} is not a safe directory name")
    assert "starting with a letter or digit" in message


def test_the_schema_refuses_an_unsafe_run_name_naming_the_key():
    from mbt_online.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(None, ["run.name=../escape"])
    assert "run.name" in str(err.value) and "'../escape' is not a safe" in str(err.value)
