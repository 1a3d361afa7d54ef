"""Questions of the regulation testbed's world (`world.twin_hops`) for tests: a look-alike chain
beside the gold one, so a slip, its catch and its repair are known exactly."""

from __future__ import annotations

from mbt_online.config import WorldConfig
from mbt_online.tasks.base import Example
from mbt_online.tasks.world import generate_world, make_examples, twin_slip

TWIN_WORLD = WorldConfig(twin_hops=True)


def twin_examples(n: int = 60, seed: int = 1000) -> list[Example]:
    """Held-out-side questions of one twin world, in generation order."""
    return make_examples(generate_world(seed, TWIN_WORLD, "eval"), n, seed, TWIN_WORLD)


def with_slip(hops: int) -> Example:
    """The first question of `hops` hops whose look-alike chain is known."""
    return next(e for e in twin_examples() if len(e.hops) == hops and twin_slip(e) is not None)
