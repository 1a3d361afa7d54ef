"""The TEACH stage: which teacher a round gets, asking it in batches, the stage's row shape, and
the verified traces as DPO candidates. The loop and the `teach` command both call `taught_rows`,
so a trace written by either reads back the same.

An outage never commits: when the teacher's failed requests pass `teacher.max_failure_rate`, its
client's circuit breaker opens, or `teacher.stage_deadline_s` passes, the stage raises
`StageFailed` before any row is written, so the loop leaves it unmarked and a resume asks again.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mbt_online.config import Config
from mbt_online.contracts import StageFailed, check_failures
from mbt_online.prompts import format_target
from mbt_online.scoring.rewards import score
from mbt_online.tasks.base import Example
from mbt_online.teachers.contract import Teacher, TeachRequest, TeachResult

BATCH = 32  # requests per `teach` call: progress is reported, and a kill loses at most a batch


def teach_rows(
    scored: list[dict],
    examples: dict[str, Example],
    cfg: Config,
    make_teacher: Callable[[], Teacher],
    desc: str = "teach",
) -> list[dict[str, Any]]:
    """TEACH: MBT-R rewrites / MBT-S syntheses for the round's scored rollouts, every output
    verified; no teacher is built when `teacher.mode` is none. Raises `StageFailed` on an outage
    (see `taught_rows`)."""
    from mbt_online.teachers.selection import teach_requests

    if cfg.teacher.mode == "none":
        return []
    requests = teach_requests(scored, examples, cfg)
    t = cfg.teacher
    return taught_rows(
        requests,
        make_teacher(),
        desc,
        max_failure_rate=t.max_failure_rate,
        deadline_s=t.stage_deadline_s,
    )


def taught_rows(
    requests: list[TeachRequest],
    teacher: Teacher,
    desc: str = "teach",
    *,
    max_failure_rate: float = 1.0,
    deadline_s: float | None = None,
) -> list[dict[str, Any]]:
    """Ask `teacher` in batches and return one row per request, verified or not, with the draft it
    rewrote ("" for MBT-S); the teacher is closed afterwards when it holds resources.

    After each batch the failed requests so far are checked against `max_failure_rate` (and an open
    circuit breaker fails at once), so a dead endpoint stops the stage after one batch instead of
    being asked for every batch; no new batch starts once `deadline_s` has passed."""
    results: list[TeachResult] = []
    start = time.monotonic()
    try:
        for i in tqdm(range(0, len(requests), BATCH), desc=desc, unit="batch"):
            if deadline_s is not None and time.monotonic() - start > deadline_s:
                raise StageFailed(
                    "teach",
                    f"past teacher.stage_deadline_s={deadline_s:g} with {i} of "
                    f"{len(requests)} requests asked",
                )
            results.extend(teacher.teach(requests[i : i + BATCH]))
            check_failures("teach", [failure_kind(r) for r in results], max_failure_rate)
    finally:
        if hasattr(teacher, "close"):
            teacher.close()
    rows = []
    for req, res in zip(requests, results, strict=True):
        row = asdict(res)
        row["draft"] = req.draft or ""
        row["trace"] = res.trace or ""
        row["usage"] = json.dumps(res.usage)
        rows.append(row)
    return rows


def failure_kind(result: TeachResult) -> str | None:
    """Why the endpoint left a request unanswered (the `ChatFailure` kind the LLM teacher records
    as `request_failed:<kind>`), or None when it answered: a trace that fails `verify` is the
    teacher's normal outcome, not an outage."""
    if result.verified:
        return None
    failed = [r for r in result.reasons if r.startswith("request_failed:")]
    return failed[-1].removeprefix("request_failed:") if failed else None


def round_teacher(
    cfg: Config, round_: int, run_dir: Path, count_tokens: Callable[[str], int]
) -> Teacher:
    """The configured backend for a round, verifying length in the student's tokens; LLM requests
    are cached in the run so a resume does not pay twice."""
    from mbt_online.teachers.llm import make_teacher

    budget = cfg.teacher.budget_tokens or max(
        [cfg.reward.default_budget, *cfg.reward.budgets.values()]
    )
    return make_teacher(
        cfg,
        round_=round_,
        cache_dir=run_dir / "cache" / "llm",
        budget_tokens=budget,
        count_tokens=count_tokens,
    )


def student_token_counter(tokenizer_dir: str) -> Callable[[str], int]:
    """Token counts in the student's tokenizer, loaded on first use (a resumed run past its last
    teach stage never loads it)."""

    def count(text: str) -> int:
        tok = _tokenizer(tokenizer_dir)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return count


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def teacher_candidates(
    taught: list[dict],
    examples: dict[str, Example],
    cfg: Config,
    count_tokens: Callable[[str], int],
) -> dict[str, list[tuple[str, float]]]:
    """Verified teacher traces as DPO chosen candidates, scored with the student reward."""
    out: dict[str, list[tuple[str, float]]] = {}
    for t in taught:
        if not t["verified"]:
            continue
        ex = examples[t["example_id"]]
        text = format_target(t["trace"], ex.answer)
        _, _, total = score(text, "stop", count_tokens(text), ex, cfg.reward)
        out.setdefault(ex.id, []).append((text, total))
    return out
