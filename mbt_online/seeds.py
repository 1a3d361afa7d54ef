"""Every seed the run derives, in one place: per round and stage, and hashed per request.

A run has a few base seeds (`run.seed`, `rollout.seed`, `eval.sampling.seed`); the stages of
each round derive theirs from those, so a resumed stage replays exactly the draws it made the
first time, while successive rounds still draw new noise.
"""

from __future__ import annotations

import hashlib

# stage -> (scale, offset): the stage's seed is base * scale + offset + round
_STAGE_SEEDS = {
    "rollout": (1, 0),
    "train": (1, 0),
    # eval and rollout seeds may be set equal by a user; the offset keeps an evaluation's draws
    # apart from the same round's training rollout (10_000 rounds are never reached)
    "eval": (1, 10_000),
    # scaled so that run seeds s and s + 1 never hand a round the same teacher seed
    "teach": (1000, 0),
    # GRPO's second rollout (from TRAIN's weights) draws apart from the round's first one
    "grpo_rollout": (1, 20_000),
    "grpo": (1, 20_000),
}


def stage_seed(base: int, round_: int, stage: str) -> int:
    """The seed of `stage` in round `round_`, from the config's base seed for that stage.

    Seeds move with the round so each round samples new completions (a fixed seed would replay the
    same rollouts on the new weights' first tokens), and depend on nothing else, so a resumed
    stage gets the seed it had before the kill."""
    scale, offset = _STAGE_SEEDS[stage]
    return base * scale + offset + round_


def hash_seed(key: str, digest_size: int = 8) -> int:
    """A 31-bit seed hashed from `key`: seeds for related draws (prompt i and i + 1, try 1 and 2)
    that must not be consecutive, since samplers give the k-th sample of a request `seed + k`.

    `digest_size` is part of the hash (blake2b's output length), kept per caller so the numbers
    of existing runs do not change."""
    digest = hashlib.blake2b(key.encode(), digest_size=digest_size).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF
