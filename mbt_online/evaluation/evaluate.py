"""Evaluating a run's model outside its loop (the `eval` command): any round, any data file, other
seeds or samples, optionally saved for re-checking. The loop's own EVAL stage is `Session.evaluate`;
both sample through `generation.rollout.evaluate_rows` (every seed of `eval.sampling`) and
aggregate through `scoring.round_metrics.summarize_eval`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mbt_online.config import Config, ConfigError, load_config
from mbt_online.contracts import Generator
from mbt_online.generation.rollout import evaluate_rows
from mbt_online.loop import resolve_student
from mbt_online.rundir import RunState, read_metrics, save_rows, write_json_atomic
from mbt_online.rundir.lock import run_lock
from mbt_online.scoring.round_metrics import summarize_eval
from mbt_online.tasks import mixture
from mbt_online.tasks.base import Example


def evaluate_round(
    run_dir: Path,
    round_: int | None = None,
    dataset: str | None = None,
    path: Path | None = None,
    limit: int | None = None,
    *,
    seed: int | None = None,
    seeds: list[int] | None = None,
    samples: int | None = None,
    distractors: int | str | None = None,
    max_model_len: int | None = None,
    temperature: float | None = None,
    save: Path | None = None,
    make_generator: Callable[[Config, str], Generator] | None = None,
) -> dict[str, Any]:
    """Evaluate a round's model (round 0 = the initial student) with the run's eval sampling, on
    the run's held-out questions or on any data file (the `eval` command). `seed` and `samples`
    override the run's: with 30 questions a benchmark one question is 3 points, so a target is
    checked over several seeds or samples, not one draw. `seeds` evaluates once per seed and adds
    each metric's spread (`scoring.round_metrics.summarize_eval`). `distractors` (a count, or "all"
    for the file's full context) applies to a data file: targets are stated for both prompt sizes,
    and the full context may need a larger `max_model_len` than the run trained with. `save`
    keeps the scored completions (a `datasets` folder, with the metrics in `metrics.json`) so a
    reported number can be re-checked or rescored later; it never overwrites an earlier one.
    `make_generator(cfg, model_dir)` defaults to the engine `engine.backend` names."""
    run_dir = Path(run_dir)
    if distractors is not None and not dataset:
        raise ConfigError("distractors: only for a data file; give dataset and path too")
    if seed is not None and seeds is not None:
        raise ConfigError("seeds: give one seed or a list of seeds, not both")
    save = None if save is None else Path(save)
    if save is not None and save.exists():
        raise ConfigError(f"save: {save} already exists; pick a new folder")
    # a saved evaluation is a run's record: one writer per run while it is made
    with run_lock(run_dir) if save is not None else contextlib.nullcontext():
        if save is not None and save.exists():  # made by another process before the lock
            raise ConfigError(f"save: {save} already exists; pick a new folder")
        cfg = _eval_config(run_dir, seed, seeds, samples, temperature, max_model_len, distractors)
        round_, model = _eval_model(run_dir, cfg, round_)
        examples = _eval_examples(cfg, dataset, path, limit)
        generator = (make_generator or _engine)(cfg, model)
        try:
            rows = evaluate_rows(generator, examples, cfg, round_)
        finally:
            generator.close()
        out = summarize_eval(rows, cfg, read_metrics(run_dir))
        # cover: the paper's name for accuracy, with its spread keys when there are any
        acc = {k: v for k, v in out.items() if k.startswith("eval/accuracy")}
        out.update({k.replace("eval/accuracy", "eval/cover"): v for k, v in acc.items()})
        out.update(round=round_, questions=len(examples))
        if save is not None:
            save_rows(rows, save)
            write_json_atomic(save / "metrics.json", out)
    return out


def _eval_config(
    run_dir: Path,
    seed: int | None,
    seeds: list[int] | None,
    samples: int | None,
    temperature: float | None,
    max_model_len: int | None,
    distractors: int | str | None,
) -> Config:
    """The run's config with the evaluation's overrides, validated like any override."""
    override = {
        "eval.sampling.seed": seed,
        # one --seed means that seed alone, even where the run evaluates over several
        "eval.sampling.seeds": json.dumps(seeds) if seeds else (None if seed is None else "null"),
        "eval.sampling.samples": samples,
        "eval.sampling.temperature": temperature,
        "student.max_model_len": max_model_len,
        "data.eval.distractors": "null" if distractors == "all" else distractors,
    }
    dotted = [f"{k}={v}" for k, v in override.items() if v is not None]
    return load_config(run_dir / "config.yaml", dotted)


def _eval_model(run_dir: Path, cfg: Config, round_: int | None) -> tuple[int, str]:
    """The round to evaluate (default: the last trained) and its model folder."""
    state = RunState.load(run_dir)
    done = state.trained_rounds()
    round_ = (done[-1] if done else 0) if round_ is None else round_
    if round_ != 0 and str(round_) not in state.models:
        raise ConfigError(f"{run_dir}: round {round_} has no trained model; trained rounds: {done}")
    return round_, resolve_student(cfg) if round_ == 0 else state.models[str(round_)]


def _eval_examples(
    cfg: Config, dataset: str | None, path: Path | None, limit: int | None
) -> list[Example]:
    if not dataset:
        return mixture.load_data(cfg)[1][:limit]
    from mbt_online.tasks import load_examples, resolve_data_path

    if path is None or not resolve_data_path(path).is_file():
        raise ConfigError(f"path: file not found: {path}")
    return load_examples(dataset, path, limit=limit, distractors=cfg.data.eval.distractors).examples


def _engine(cfg: Config, model_dir: str) -> Generator:
    from mbt_online.generation.backends import make_generator

    return make_generator(cfg, model_dir)
