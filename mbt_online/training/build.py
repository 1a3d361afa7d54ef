"""BUILD: which rows training gets (SFT rows, DPO pairs): pure functions over scored rollouts and
teacher outputs.

Kept apart from the loop so the choices (which trace is the student's best, what makes a DPO pair)
are unit tested on plain dicts, without an engine or trainer.
"""

from __future__ import annotations

from typing import Any

from mbt_online.config import Config
from mbt_online.prompts import format_target, student_messages
from mbt_online.scoring.rows import by_question
from mbt_online.tasks.base import Example

Row = dict[str, Any]


def best_student(group: list[Row]) -> Row | None:
    """The student's own best correct, self-terminated trace (rejection sampling)."""
    good = student_picks(group, "reward")
    return good[0] if good else None


def student_picks(group: list[Row], select: str) -> list[Row]:
    """The student's correct, self-terminated traces of one question: best reward first
    (`reward`), or in sample order, unranked (`correct`: the paper's self-distillation)."""
    good = [r for r in group if r["correct"] >= 1.0 and not r["truncated"]]
    if select == "correct":
        return sorted(good, key=lambda r: r["sample"])
    return sorted(good, key=lambda r: (-r["reward"], r["sample"]))


def sft_rows(
    rows: list[Row], teach: list[Row], examples: dict[str, Example], cfg: Config
) -> list[Row]:
    """Prompt/completion rows: verified teacher traces, or the student's own correct ones (mode
    none), at most `train.sft.max_rows_per_question` per question whatever the method, so
    methods compete on the same budget."""
    metacog = cfg.student.use_metacognitive_prompt
    cap = cfg.train.sft.max_rows_per_question
    if cfg.teacher.mode == "none":
        picks = [
            (qid, r["completion"], "student")
            for qid, group in by_question(rows).items()
            for r in student_picks(group, cfg.train.sft.select)
        ]
    else:
        picks = [
            (
                t["example_id"],
                format_target(t["trace"], examples[t["example_id"]].answer),
                t["mode"],
            )
            for t in teach
            if t["verified"]
        ]
    out, per_question = [], {}
    for qid, text, source in picks:
        if cap is not None and per_question.get(qid, 0) >= cap:
            continue
        per_question[qid] = per_question.get(qid, 0) + 1
        out.append(_row(examples[qid], text, metacog, source))
    return out


def _row(ex: Example, completion: str, metacog: bool, source: str) -> Row:
    return {
        "example_id": ex.id,
        "source": source,
        "prompt": student_messages(ex, metacognitive=metacog),
        "completion": [{"role": "assistant", "content": completion}],
    }


def dpo_pairs(
    rows: list[Row],
    chosen_candidates: dict[str, list[tuple[str, float]]],
    examples: dict[str, Example],
    cfg: Config,
) -> list[Row]:
    """Chosen = a verified metacognitive trace, the student's best correct trace, or the latter
    falling back to the former (`train.dpo.chosen`); rejected = the student's worst trace for
    that question; kept only when the reward gap passes the margin, so DPO never pushes against
    a preference the rewards cannot see."""
    dpo, metacog, out = cfg.train.dpo, cfg.student.use_metacognitive_prompt, []
    for qid, group in by_question(rows).items():
        ex = examples[qid]
        best = best_student(group)
        own = [(best["completion"], best["reward"])] if best else []
        teacher = sorted(chosen_candidates.get(qid, []), key=lambda c: -c[1])
        if dpo.chosen == "student_best" or cfg.teacher.mode == "none":
            chosen = own
        elif dpo.chosen == "student_then_teacher":
            chosen = own or teacher
        else:
            chosen = teacher
        rejected = sorted(group, key=lambda r: (r["reward"], r["sample"]))
        pairs = 0
        for (text, reward), rej in zip(chosen, rejected, strict=False):
            if pairs >= dpo.max_pairs_per_question:
                break
            if reward - rej["reward"] >= dpo.margin and text != rej["completion"]:
                out.append(
                    {
                        "example_id": qid,
                        "prompt": student_messages(ex, metacognitive=metacog),
                        "chosen": [{"role": "assistant", "content": text}],
                        "rejected": [{"role": "assistant", "content": rej["completion"]}],
                        "rejected_truncated": bool(rej["truncated"]),
                        "margin": reward - rej["reward"],
                    }
                )
                pairs += 1
    return out
