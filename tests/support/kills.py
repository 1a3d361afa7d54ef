"""Where a run can be killed, stage by stage, and how each kill is arranged."""

from __future__ import annotations

from fakes import (
    Killed,
)

from mbt_online import loop


def fail_on_call(monkeypatch, name: str, n: int, after: bool = False) -> None:
    """Make `loop.<name>` die at its n-th call, before it runs or (after=True) once it returned."""
    real, count = getattr(loop, name), [0]

    def dying(*args, **kwargs):
        count[0] += 1
        if count[0] == n and not after:
            raise Killed(name)
        out = real(*args, **kwargs)
        if count[0] == n:
            raise Killed(name)
        return out

    monkeypatch.setattr(loop, name, dying)


def fail_on_save(monkeypatch, suffix: str) -> None:
    """Die while writing the stage output whose path ends with `suffix` (the first time)."""
    real, done = loop.save_rows, []

    def dying(rows, out):
        if str(out).endswith(suffix) and not done:
            done.append(out)
            raise Killed(suffix)
        return real(rows, out)

    monkeypatch.setattr(loop, "save_rows", dying)


# (where the kill happens, the stage left unmarked in round 1, how it is arranged)
KILLS = {
    "rollout": lambda mp, f: setattr(f, "fail", "generator") or setattr(f, "fail_at", 2),
    "score": lambda mp, f: fail_on_call(mp, "score_rows", 1),
    "teach": lambda mp, f: setattr(f, "fail", "teacher"),
    "build": lambda mp, f: fail_on_save(mp, "round-1/build/dpo"),  # SFT rows written, DPO not
    "train": lambda mp, f: setattr(f, "fail", "trainer"),
    "eval": lambda mp, f: fail_on_save(mp, "round-1/eval"),
    "eval-mark": lambda mp, f: fail_on_call(mp, "write_round_metrics", 2, after=True),
}
