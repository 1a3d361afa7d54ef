"""The base of every config section: unknown keys refused naming them, assignments checked."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from mbt_online.config import Config, ConfigError, validate
from mbt_online.config.section import Section


class Toy(Section):
    rounds: int = Field(default=1, ge=0)
    name: str = "x"


def test_defaults_and_known_keys():
    assert Toy().model_dump() == {"rounds": 1, "name": "x"}
    assert Toy(rounds=3, name="y").rounds == 3


def test_an_unknown_key_is_refused_naming_it():
    with pytest.raises(ValidationError) as err:
        Toy(rounds=2, roundz=3)
    (error,) = err.value.errors()
    assert error["type"] == "extra_forbidden" and error["loc"] == ("roundz",)


def test_an_assignment_is_validated_too():
    toy = Toy()
    toy.rounds = 5
    assert toy.rounds == 5
    with pytest.raises(ValidationError):
        toy.rounds = -1
    with pytest.raises(ValidationError):
        toy.rounds = "many"  # type: ignore[assignment]
    assert toy.rounds == 5  # a refused assignment leaves the value alone


def test_assignment_coerces_as_construction_does():
    toy = Toy()
    toy.rounds = "7"  # type: ignore[assignment]
    assert toy.rounds == 7


def test_every_section_of_the_schema_is_a_section():
    """All of them forbid unknown keys: a typo in any config key is an error, never ignored."""
    seen = []

    def walk(model: type) -> None:
        for field in model.model_fields.values():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, Section) and ann not in seen:
                seen.append(ann)
                walk(ann)

    walk(Config)
    assert issubclass(Config, Section) and len(seen) >= 10
    assert all(m.model_config.get("extra") == "forbid" for m in [Config, *seen])


def test_a_config_typo_is_an_error_naming_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        validate({"loop": {"roundz": 2}})
    message = str(err.value)
    assert "loop.roundz: unknown key; allowed keys here: " in message
    assert "rounds" in message.split("allowed keys here:")[1]
