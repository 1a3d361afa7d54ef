"""One stage by hand, outside a run's loop: `eval`, `teach` and `judge`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mbt_online.cli.common import (
    DATASET_HELP,
    FAILED_EXIT,
    PATH_HELP,
    app,
    console,
    fail,
    flag_wording,
    fmt_value,
    parse_distractors,
)
from mbt_online.config import ConfigError, load_config


@app.command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Option(help="A run directory.")],
    round_: Annotated[
        int | None,
        typer.Option("--round", help="Round (default: the last; 0 = the untrained student)."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Evaluate on this data file instead of the run's held-out questions: "
            + DATASET_HELP
        ),
    ] = None,
    path: Annotated[
        Path | None, typer.Option(help="The data file for --dataset. " + PATH_HELP)
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N questions.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Sampling seed (default: the run's eval.sampling.seed).")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Comma list of seeds, e.g. 0,1,2: evaluate once per seed and report each "
            "metric's mean, std over seeds and 95% interval (default: the run's "
            "eval.sampling.seeds)."
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1, help="Completions per question, metrics averaged (default: the run's)."
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Sampling temperature (default: the run's eval.sampling.temperature; 0 = greedy).",
        ),
    ] = None,
    distractors: Annotated[
        str | None,
        typer.Option(
            help="With --dataset: distractor documents kept beside the gold ones, a count or "
            "'all' for the file's full context (default: the run's data.eval.distractors)."
        ),
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(
            min=64,
            help="Context window for this evaluation (default: the run's; raise it "
            "for --distractors all).",
        ),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="Keep the scored completions in this new folder (a datasets folder, "
            "metrics in metrics.json) so the numbers can be re-checked."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate a round's student: cover, EM, F1, answer-inclusive and degeneration rates."""
    from mbt_online.contracts import PromptTooLongError
    from mbt_online.evaluation.evaluate import evaluate_round

    if (dataset is None) != (path is None):
        fail("--dataset and --path go together")
    keep = parse_distractors(distractors)
    seed_list = parse_seeds(seeds)
    try:
        metrics = evaluate_round(
            run,
            round_,
            dataset,
            path,
            limit,
            seed=seed,
            seeds=seed_list,
            samples=samples,
            distractors=keep,
            max_model_len=max_model_len,
            temperature=temperature,
            save=save,
        )
    except ConfigError as e:
        fail(flag_wording(e))
    except PromptTooLongError as e:
        fail(f"{e} (for this evaluation: --max-model-len)")
    short = {k.removeprefix("eval/"): v for k, v in metrics.items()}
    if as_json:
        print(json.dumps(short, sort_keys=True))
        return
    table = Table(title=f"eval {run} round {metrics['round']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(short.items()):
        table.add_row(k, fmt_value(v))
    console.print(table)


def parse_seeds(value: str | None) -> list[int] | None:
    """`--seeds 0,1,2` as distinct integers."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or not all(v.lstrip("-").isdigit() for v in items):
        fail(f"--seeds: expected a comma list of integers, e.g. 0,1,2; got {value!r}")
    if len(set(items)) != len(items):
        fail(f"--seeds: seeds repeat in {value!r}")
    return [int(v) for v in items]


@app.command()
def teach(
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)],
    path: Annotated[Path, typer.Option(help="Data file. " + PATH_HELP)],
    out: Annotated[Path, typer.Option(help="Output folder (a datasets save_to_disk folder).")],
    mode: Annotated[
        str, typer.Option(help="mbt-s (synthesize) or mbt-r (rewrite drafts).")
    ] = "mbt-s",
    teacher: Annotated[str, typer.Option(help="Teacher backend (structured here).")] = "structured",
    drafts: Annotated[
        Path | None,
        typer.Option(
            help="For mbt-r: a rollout/score folder of a run (columns example_id, completion)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N examples.")] = None,
    seed: int = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write teacher traces for a data file and report how many pass `verify`."""
    from mbt_online.rundir.names import check_output_folder
    from mbt_online.rundir.stages import load_rows, save_rows
    from mbt_online.tasks import load_examples, resolve_data_path
    from mbt_online.teachers.contract import TeachRequest
    from mbt_online.teachers.stage import taught_rows
    from mbt_online.teachers.structured import StructuredTeacher

    if mode not in ("mbt-s", "mbt-r"):
        fail(f"--mode must be mbt-s or mbt-r (got {mode!r})")
    if teacher != "structured":
        fail(
            "`teach` runs the structured teacher; LLM teachers run inside `train` "
            "(teacher.backend=openai|vllm)"
        )
    if not resolve_data_path(path).is_file():
        fail(f"--path: file not found: {path}")
    try:
        out = check_output_folder(out)
    except ValueError as e:
        fail(str(e))
    examples = load_examples(dataset, path, limit=limit).examples
    draft_of: dict[str, str] = {}
    if mode == "mbt-r":
        if drafts is None:
            fail("--mode mbt-r rewrites student drafts: pass --drafts RUN/round-<r>/score")
        for row in load_rows(drafts):
            draft_of.setdefault(row["example_id"], row["completion"])
        examples = [ex for ex in examples if ex.id in draft_of]
    requests = [TeachRequest(example=ex, mode=mode, draft=draft_of.get(ex.id)) for ex in examples]
    rows = taught_rows(requests, StructuredTeacher(seed=seed))
    save_rows(rows, out)
    reasons = Counter(
        reason.split(":")[0] for r in rows if not r["verified"] for reason in r["reasons"]
    )
    summary = {
        "total": len(rows),
        "verified": sum(r["verified"] for r in rows),
        "rejected": sum(not r["verified"] for r in rows),
        "rejected_reasons": dict(reasons),
        "out": str(out),
    }
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        console.print(
            f"{summary['verified']} of {summary['total']} traces verified, "
            f"{summary['rejected']} rejected {dict(reasons) or ''}; written to {out}"
        )


@app.command()
def judge(
    run: Annotated[Path, typer.Option(help="A run directory.")],
    round_: Annotated[int, typer.Option("--round", help="The round whose eval to judge.")],
    judges: Annotated[
        str, typer.Option(help="Comma list of correctness, answer_hit, rrp, mqi.")
    ] = "correctness,rrp,mqi",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Add LLM-judge metrics to a finished round (endpoint: the run's teacher.base_url/model)."""
    from mbt_online.contracts import StageFailed
    from mbt_online.evaluation.judges import judge_round
    from mbt_online.rundir.lock import run_lock

    names = [j.strip() for j in judges.split(",") if j.strip()]
    allowed = ("correctness", "answer_hit", "rrp", "mqi")
    if bad := [j for j in names if j not in allowed]:
        fail(f"--judges: unknown {', '.join(bad)}; allowed: {', '.join(allowed)}")
    try:
        if not run.is_dir():
            raise ConfigError(f"--run: {run} is not a run directory")
        with run_lock(run):  # judge rewrites metrics.jsonl: one writer per run
            cfg = load_config(run / "config.yaml")
            metrics = judge_round(run, round_, names, cfg)
    except (ConfigError, FileNotFoundError) as e:
        fail(str(e))
    except StageFailed as e:
        fail(
            f"{e}\nNothing was written; run the same command again when the endpoint is back.",
            FAILED_EXIT,
        )
    if as_json:
        print(json.dumps(metrics, sort_keys=True))
    else:
        for k, v in sorted(metrics.items()):
            console.print(f"{k}: {fmt_value(v)}")
