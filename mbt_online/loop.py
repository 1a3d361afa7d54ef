"""The online MBT loop, top to bottom.

    round 0:  EVAL the initial student (the baseline for AES and MQI)
    round r:  ROLLOUT -> SCORE -> TEACH (+ verify) -> BUILD (SFT rows, DPO pairs)
              -> TRAIN (SFT, then DPO) -> HANDOFF (new weights into vLLM) -> EVAL

Each stage reads its inputs from disk and writes `runs/<name>/round-<r>/<stage>/` atomically, then
marks itself done in `state.json`; `train(..., resume=True)` skips what is done. Everything a stage
does in detail lives in the module it calls: engine (vLLM), rewards/metrics, teacher, selection,
train (TRL), tracking.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mbt_online.config import Config, ConfigError, dump_config, load_config
from mbt_online.prompts import student_messages
from mbt_online.rundir import files
from mbt_online.rundir.files import RunState, load_rows, save_rows, stage_dir
from mbt_online.scoring.metrics import aes, aggregate, by_group, mqi, split_trace
from mbt_online.scoring.rewards import score
from mbt_online.tasks import mixture
from mbt_online.tasks.base import Example
from mbt_online.tracking import Tracker, read_metrics, setup_logging, timed, write_round_metrics

log = logging.getLogger("mbt_online")
# the HF tokenizers' thread pool warns (and can deadlock) once TRL's data workers fork
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STAGES = ("rollout", "score", "teach", "build", "train", "eval")


# ---------------------------------------------------------------------------------------------
# entry points


def train(cfg: Config, run_dir: Path | None = None, resume: bool = False) -> Path:
    """Run (or resume) a multi-round MBT training run; returns the run directory."""
    run_dir = Path(run_dir or Path(cfg.run.runs_dir) / cfg.run.name)
    if resume:
        cfg = load_config(run_dir / "config.yaml")
    prepare_run_dir(run_dir, cfg, resume)
    setup_logging(run_dir)
    state = RunState.load(run_dir)
    what = "resuming" if resume else "starting"
    log.info("run %s: %s, %d rounds", run_dir, what, cfg.loop.rounds)
    train_examples, eval_examples = mixture.load_data(cfg)
    initial = resolve_student(cfg)
    tracker = Tracker(cfg, run_dir)
    session = Session(cfg, run_dir, state, tracker, initial)
    try:
        for round_ in range(cfg.loop.rounds + 1):
            session.run_round(round_, train_examples, eval_examples)
        state.finished = True
        state.save()
        log.info("run finished: %s", run_dir)
    finally:
        session.close()
    return run_dir


def extend_run(run_dir: Path, rounds: int) -> None:
    """Set a run's round count before `--resume`: a finished run whose curves still improve goes on
    from its last model (its done rounds untouched) instead of being retrained from round 0."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml", [f"loop.rounds={rounds}"])
    state = RunState.load(run_dir)
    trained = max(state.trained_rounds(), default=0)
    if rounds < trained:
        raise ConfigError(f"--rounds {rounds}: {run_dir} has already trained {trained} rounds")
    dump_config(cfg, run_dir / "config.yaml")
    if state.finished and rounds > trained:
        state.finished = False
        state.save()


def evaluate_round(
    run_dir: Path,
    round_: int | None = None,
    dataset: str | None = None,
    path: Path | None = None,
    limit: int | None = None,
    *,
    seed: int | None = None,
    samples: int | None = None,
    distractors: int | str | None = None,
    max_model_len: int | None = None,
    temperature: float | None = None,
    save: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a round's model (round 0 = the initial student) with the run's eval sampling, on
    the run's held-out questions or on any data file (the `eval` command). `seed` and `samples`
    override the run's: with 30 questions a benchmark one question is 3 points, so a target is
    checked over several seeds or samples, not one draw. `distractors` (a count, or "all" for the
    file's full context) applies to a data file: targets are stated for both prompt sizes, and the
    full context may need a larger `max_model_len` than the run trained with. `save` keeps the
    scored completions (a `datasets` folder, with the metrics in `metrics.json`) so a reported
    number can be re-checked or rescored later; it never overwrites an earlier evaluation."""
    run_dir = Path(run_dir)
    if distractors is not None and not dataset:
        raise ConfigError("--distractors applies to a --dataset/--path file")
    save = None if save is None else Path(save)
    if save is not None and save.exists():
        raise ConfigError(f"--save: {save} already exists; pick a new folder")
    override = {
        "eval.sampling.seed": seed,
        "eval.sampling.samples": samples,
        "eval.sampling.temperature": temperature,
        "student.max_model_len": max_model_len,
        "data.eval.distractors": "null" if distractors == "all" else distractors,
    }
    dotted = [f"{k}={v}" for k, v in override.items() if v is not None]
    cfg = load_config(run_dir / "config.yaml", dotted)  # validated like any override
    state = RunState.load(run_dir)
    done = state.trained_rounds()
    round_ = (done[-1] if done else 0) if round_ is None else round_
    if round_ != 0 and str(round_) not in state.models:
        raise ConfigError(f"{run_dir}: round {round_} has no trained model; trained rounds: {done}")
    if dataset:
        from mbt_online.tasks.base import load_examples

        if path is None or not Path(path).is_file():
            raise ConfigError(f"--path: file not found: {path}")
        res = load_examples(dataset, path, limit=limit, distractors=cfg.data.eval.distractors)
        examples = res.examples
    else:
        examples = mixture.load_data(cfg)[1][:limit]
    model = resolve_student(cfg) if round_ == 0 else state.models[str(round_)]
    from mbt_online.engine import Engine

    engine = make_engine(cfg, model, Engine)
    try:
        rows = rollout_rows(engine, examples, cfg, cfg.eval.sampling, 10_000 + round_)
    finally:
        engine.close()
    out = summarize(rows, cfg, read_metrics(run_dir), prefix="eval")
    out["eval/cover"] = out["eval/accuracy"]
    out.update(round=round_, questions=len(examples))
    if save is not None:
        save_rows(rows, save)
        files.write_json_atomic(save / "metrics.json", out)
    return out


# ---------------------------------------------------------------------------------------------
# set-up: everything that can fail on user input fails here, before any work


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool) -> None:
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory?")
        return
    if (run_dir / files.STATE_FILE).exists():
        raise ConfigError(
            f"run directory {run_dir} already holds a run: resume it with "
            f"`mbt-online train --resume {run_dir}`, or pick another run.name / --run-dir"
        )
    mixture.check_data_paths(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"run directory {run_dir} is not writable ({e.strerror}); "
            "pass --run-dir or set run.runs_dir to a writable folder"
        ) from None
    dump_config(cfg, run_dir / "config.yaml")
    RunState(path=run_dir / files.STATE_FILE).save()


def resolve_student(cfg: Config) -> str:
    """The initial student's HF folder: the embedded bootstrap, a known name, or a local path."""
    name = cfg.student.model
    if name == "bootstrap":
        from mbt_online.sim.bootstrap import ensure_student

        return str(ensure_student(cfg))
    from mbt_online.tools.pretrained import KNOWN_MODELS, ModelFetchError, resolve_model

    try:
        return str(Path(resolve_model(name)).resolve())
    except ValueError:
        raise ConfigError(
            f"student.model: {name!r} is not 'bootstrap', a known model "
            f"({', '.join(KNOWN_MODELS)}) or an existing model folder"
        ) from None
    except ModelFetchError as e:
        raise ConfigError(f"student.model: could not fetch {name!r}: {e}") from None


def make_engine(cfg: Config, model_dir: str, engine_cls: Any) -> Any:
    return engine_cls(
        model_dir,
        dtype=cfg.student.dtype,
        max_model_len=cfg.student.max_model_len,
        seed=cfg.run.seed,
        enable_lora=cfg.engine.handoff == "lora",
        max_lora_rank=cfg.train.lora.r,
        kvcache_gib=cfg.engine.kvcache_gib,
        enforce_eager=cfg.engine.enforce_eager,
        gpu_memory_utilization=cfg.engine.gpu_memory_utilization,
    )


# ---------------------------------------------------------------------------------------------
# one round


class Session:
    """What lives across rounds: the live engine, the tracker and the model lineage."""

    def __init__(
        self, cfg: Config, run_dir: Path, state: RunState, tracker: Tracker, initial: str
    ) -> None:
        self.cfg, self.run_dir, self.state, self.tracker = cfg, run_dir, state, tracker
        self.initial = initial
        self.engine: Any = None
        self.engine_model: str | None = None
        self.adapter: tuple[str, str] | None = None  # (base model dir, adapter dir)

    def model_at(self, round_: int) -> str:
        """The model a round ends with (round 0: the initial student)."""
        return self.state.models.get(str(round_), self.initial)

    def ensure_engine(self, model_dir: str) -> Any:
        """Start the engine lazily (a resumed run may need none) and hand off new weights."""
        if self.engine is None:
            from mbt_online.engine import Engine

            self.engine = make_engine(self.cfg, model_dir, Engine)
            self.engine_model = model_dir
        elif self.engine_model != model_dir:
            mode = self.cfg.engine.handoff
            if mode == "lora" and self.adapter:
                self.engine.handoff("lora", *self.adapter)
            else:  # lora with nothing trained as an adapter this round: the merged weights
                self.engine.handoff("reload" if mode == "lora" else mode, model_dir)
            self.engine_model = model_dir
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.tracker.finish()

    def run_round(self, r: int, train_ex: list[Example], eval_ex: list[Example]) -> None:
        if self.state.done(r, "eval"):
            log.info("round %d: already done, skipping", r)
            return
        cfg, timings, metrics = self.cfg, {}, {"round": r}
        examples = {ex.id: ex for ex in train_ex}
        if r > 0:
            questions = mixture.round_questions(train_ex, r, cfg.loop.questions_per_round)
            start_model = self.model_at(r - 1)
            with timed("rollout", timings):
                raw = self.stage(
                    r,
                    "rollout",
                    lambda: generate_rows(
                        self.ensure_engine(start_model), questions, cfg, cfg.rollout, r
                    ),
                )
            with timed("score", timings):
                scored = self.stage(r, "score", lambda: score_rows(raw, examples, cfg))
            with timed("teach", timings):
                taught = self.stage(
                    r,
                    "teach",
                    lambda: teach_rows(scored, examples, cfg, r, self.run_dir, self.initial),
                )
            with timed("build", timings):
                self.build(r, scored, taught, examples)
            with timed("train", timings):
                metrics.update(self.train_round(r, start_model))
            metrics.update(rollout_metrics(scored, taught))
        with timed("eval", timings):
            eval_rows = self.stage(
                r,
                "eval",
                lambda: rollout_rows(
                    self.ensure_engine(self.model_at(r)),
                    eval_ex,
                    cfg,
                    cfg.eval.sampling,
                    10_000 + r,
                ),
                mark=False,
            )
        metrics.update(summarize(eval_rows, cfg, read_metrics(self.run_dir), prefix="eval"))
        metrics.update(timings)
        write_round_metrics(self.run_dir, metrics)
        if cfg.eval.judges:
            from mbt_online.llm.judges import judge_round

            with timed("judge", timings):
                metrics.update(judge_round(self.run_dir, r, cfg.eval.judges, cfg))
            metrics.update(timings)
            write_round_metrics(self.run_dir, metrics)
        self.tracker.log_round(metrics, sample_table(eval_rows, cfg.tracking.table_rows))
        self.state.mark(r, "eval")
        log.info("round %d: %s", r, format_headline(metrics))

    def stage(self, r: int, name: str, compute: Any, mark: bool = True) -> list[dict[str, Any]]:
        """Run a stage unless done; either way return its rows as read back from disk.

        EVAL is marked done only after its metrics line is written (mark=False here), so a run
        killed in between reuses the eval artifact, which is complete because it was written
        atomically."""
        out = stage_dir(self.run_dir, r, name)
        if not (self.state.done(r, name) or (not mark and out.exists())):
            save_rows(compute(), out)
            if mark:
                self.state.mark(r, name)
        return load_rows(out)

    def build(self, r: int, scored: list[dict], taught: list[dict], examples: dict) -> None:
        from mbt_online.teachers.targets import dpo_pairs, sft_rows

        if self.state.done(r, "build"):
            return
        cfg = self.cfg
        sft = sft_rows(scored, taught, examples, cfg) if cfg.train.sft.enabled else []
        pairs = []
        if cfg.train.dpo.enabled:
            pairs = dpo_pairs(
                scored, teacher_candidates(taught, examples, cfg, self.initial), examples, cfg
            )
        save_rows(sft, stage_dir(self.run_dir, r, "build") / "sft")
        save_rows(pairs, stage_dir(self.run_dir, r, "build") / "dpo")
        log.info("round %d: built %d SFT rows and %d DPO pairs", r, len(sft), len(pairs))
        self.state.mark(r, "build")

    def train_round(self, r: int, start_model: str) -> dict[str, float]:
        """SFT then DPO from the round's starting model; records the round's final model."""
        from mbt_online.train import train_dpo, train_sft

        cfg, out = self.cfg, stage_dir(self.run_dir, r, "train")
        metrics_file = out / "train_metrics.json"
        if self.state.done(r, "train"):
            return json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        sft = files.load_dataset_dir(stage_dir(self.run_dir, r, "build") / "sft")
        pairs = files.load_dataset_dir(stage_dir(self.run_dir, r, "build") / "dpo")
        metrics: dict[str, float] = {"train/sft_rows": len(sft), "train/dpo_pairs": len(pairs)}
        bf16 = cfg.student.dtype == "bfloat16"
        model, adapter, adapter_base = start_model, None, start_model
        if len(sft):
            res = train_sft(model, sft, out / "sft", cfg.train, seed=cfg.run.seed + r, bf16=bf16)
            adapter_base, model, adapter = model, str(res.model_dir), res.adapter_dir
            metrics.update(res.metrics)
        if cfg.train.dpo.enabled and len(pairs):
            ref = self.initial if cfg.train.dpo.reference == "initial" else model
            res = train_dpo(
                model, ref, pairs, out / "dpo", cfg.train, seed=cfg.run.seed + r, bf16=bf16
            )
            adapter_base, model, adapter = model, str(res.model_dir), res.adapter_dir
            metrics.update(res.metrics)
        # a LoRA adapter belongs to the model its stage started from, not to the initial student
        self.adapter = (adapter_base, str(adapter)) if adapter else None
        # wall-clock numbers belong under timing/: everything else must replay exactly on resume
        for key in [k for k in metrics if k.endswith("_seconds")]:
            metrics[f"timing/{key.split('/')[-1].removesuffix('_seconds')}"] = metrics.pop(key)
        out.mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(metrics_file, metrics)
        self.state.models[str(r)] = model
        self.state.mark(r, "train")
        return metrics


# ---------------------------------------------------------------------------------------------
# stage bodies


def generate_rows(
    engine: Any, examples: list[Example], cfg: Config, sampling: Any, seed_offset: int
) -> list[dict[str, Any]]:
    """ROLLOUT: K samples per question from the current student, as raw generations."""
    messages = [
        student_messages(ex, metacognitive=cfg.student.use_metacognitive_prompt) for ex in examples
    ]
    outs = engine.generate(
        messages,
        n=sampling.samples,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        max_tokens=sampling.max_tokens,
        seed=sampling.seed + seed_offset,
    )
    return [
        {
            "example_id": ex.id,
            "sample": k,
            "completion": c.text,
            "finish_reason": c.finish_reason,
            "tokens": c.completion_tokens,
            "prompt_tokens": c.prompt_tokens,
        }
        for ex, completions in zip(examples, outs, strict=True)
        for k, c in enumerate(completions)
    ]


def score_rows(raw: list[dict], examples: dict[str, Example], cfg: Config) -> list[dict[str, Any]]:
    """SCORE: every diagnostic and reward component of each generation."""
    return [scored_row(examples[r["example_id"]], r, cfg) for r in raw]


def rollout_rows(
    engine: Any, examples: list[Example], cfg: Config, sampling: Any, seed_offset: int
) -> list[dict[str, Any]]:
    """Generate and score in one go (EVAL and the `eval` command)."""
    raw = generate_rows(engine, examples, cfg, sampling, seed_offset)
    return score_rows(raw, {ex.id: ex for ex in examples}, cfg)


def scored_row(ex: Example, raw: dict[str, Any], cfg: Config) -> dict[str, Any]:
    text, finish_reason, tokens = raw["completion"], raw["finish_reason"], raw["tokens"]
    d, components, total = score(text, finish_reason, tokens, ex, cfg.reward)
    return {
        **raw,
        "question": ex.question,
        "answer": ex.answer,
        "aliases": ex.aliases,
        "tier": ex.tier,
        "source": ex.source,
        "trace": split_trace(text),
        "predicted": d.answer or "",
        "correct": d.correct,
        "truncated": d.truncated,
        "answer_inclusive": d.answer_inclusive_error,
        "redundancy": d.redundancy,
        "over_budget": d.over_budget,
        "phases": d.phases,
        "reward": total,
        "components": json.dumps(components),
        "diagnostics": json.dumps(asdict(d)),
    }


def teach_rows(
    scored: list[dict],
    examples: dict[str, Example],
    cfg: Config,
    r: int,
    run_dir: Path,
    tokenizer_dir: str,
) -> list[dict[str, Any]]:
    """Ask the configured teacher for MBT-R rewrites / MBT-S syntheses; every output is verified."""
    from mbt_online.teachers.targets import teach_requests

    if cfg.teacher.mode == "none":
        return []
    requests = teach_requests(scored, examples, cfg)
    teacher = make_teacher(cfg, r, run_dir, tokenizer_dir)
    results = []
    try:
        for i in tqdm(range(0, len(requests), 32), desc=f"teach round {r}", unit="batch"):
            results.extend(teacher.teach(requests[i : i + 32]))
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


def make_teacher(cfg: Config, r: int, run_dir: Path, tokenizer_dir: str) -> Any:
    """The configured backend, verifying length in the student's tokens; LLM requests are cached
    in the run so a resume does not pay twice."""
    from mbt_online.teachers.llm import make_teacher as pick_teacher

    budget = cfg.teacher.budget_tokens or max(
        [cfg.reward.default_budget, *cfg.reward.budgets.values()]
    )
    tok = student_tokenizer(tokenizer_dir)
    return pick_teacher(
        cfg,
        round_=r,
        cache_dir=run_dir / "cache" / "llm",
        budget_tokens=budget,
        count_tokens=lambda text: len(tok(text, add_special_tokens=False)["input_ids"]),
    )


@functools.lru_cache(maxsize=2)
def student_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def teacher_candidates(
    taught: list[dict], examples: dict[str, Example], cfg: Config, tokenizer_dir: str
) -> dict[str, list[tuple[str, float]]]:
    """Verified teacher traces as DPO chosen candidates, scored with the student reward."""
    from mbt_online.prompts import format_target

    tok = student_tokenizer(tokenizer_dir)
    out: dict[str, list[tuple[str, float]]] = {}
    for t in taught:
        if not t["verified"]:
            continue
        ex = examples[t["example_id"]]
        text = format_target(t["trace"], ex.answer)
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        _, _, total = score(text, "stop", n, ex, cfg.reward)
        out.setdefault(ex.id, []).append((text, total))
    return out


# ---------------------------------------------------------------------------------------------
# metrics


def summarize(rows: list[dict], cfg: Config, history: list[dict], prefix: str) -> dict[str, float]:
    """Aggregate diagnostics of one evaluation, with AES and MQI relative to round 0."""
    from mbt_online.scoring.metrics import TraceDiagnostics

    diags = [TraceDiagnostics(**json.loads(r["diagnostics"])) for r in rows]
    agg = aggregate(diags, [r["tier"] for r in rows])
    base = next((m for m in history if m.get("round") == 0), None)
    base_acc = base[f"{prefix}/accuracy"] if base else agg["accuracy"]
    base_tok = base[f"{prefix}/mean_tokens"] if base else agg["mean_tokens"]
    agg["aes"] = aes(
        agg["accuracy"], agg["mean_tokens"], base_acc, base_tok, cfg.aes.a, cfg.aes.b, cfg.aes.c
    )
    agg["mqi"] = mqi(agg["mqi_level"], base_tok, agg["mean_tokens"])
    out = {f"{prefix}/{k}": v for k, v in agg.items()}
    out.update(reward_means(rows, f"{prefix}_"))
    out.update(source_metrics(rows, diags, prefix))
    return out


SOURCE_KEYS = (
    "accuracy",
    "mean_tokens",
    "tokens_per_correct",
    "degeneration_rate",
    "answer_inclusive_rate",
)


def source_metrics(rows: list[dict], diags: list[Any], prefix: str) -> dict[str, float]:
    """<prefix>/<benchmark>/<metric> when the evaluation mixes benchmarks: targets are stated per
    benchmark, and a pooled mean hides one that gets worse."""
    sources = [r.get("source", "") for r in rows]
    if len(set(sources)) < 2:
        return {}
    return {f"{prefix}/{k}": v for k, v in by_group(diags, sources, SOURCE_KEYS).items()}


def reward_means(rows: list[dict], prefix: str = "") -> dict[str, float]:
    """Mean of every reward component and of the weighted total, as reward/<prefix><name>."""
    if not rows:
        return {}
    comps = [json.loads(r["components"]) for r in rows]
    out = {f"reward/{prefix}{key}": sum(c[key] for c in comps) / len(rows) for key in comps[0]}
    out[f"reward/{prefix}total"] = sum(r["reward"] for r in rows) / len(rows)
    return out


def rollout_metrics(scored: list[dict], taught: list[dict]) -> dict[str, float]:
    """rollout/, reward/ and teacher/ scalars of the training rollouts and the teacher."""
    n = max(len(scored), 1)
    out: dict[str, float] = {
        "rollout/samples": len(scored),
        "rollout/accuracy": sum(r["correct"] for r in scored) / n,
        "rollout/mean_tokens": sum(r["tokens"] for r in scored) / n,
        "rollout/degeneration_rate": sum(r["truncated"] for r in scored) / n,
        "rollout/answer_inclusive_rate": sum(r["answer_inclusive"] for r in scored) / n,
    }
    out.update(reward_means(scored))
    out.setdefault("reward/total", 0.0)
    out["teacher/requests"] = len(taught)
    if taught:
        out["teacher/accepted"] = sum(t["verified"] for t in taught)
        out["teacher/acceptance_rate"] = out["teacher/accepted"] / len(taught)
        out["teacher/mean_tries"] = sum(t["tries"] for t in taught) / len(taught)
        reasons: dict[str, int] = {}
        for t in taught:
            for reason in t["reasons"] if not t["verified"] else []:
                key = reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
        out.update({f"teacher/rejected_{k}": v for k, v in reasons.items()})
    return out


def sample_table(rows: list[dict], n: int) -> list[dict[str, Any]]:
    """A few completions with their reward components, for the per-round wandb table."""
    picked = random.Random(0).sample(rows, min(n, len(rows)))
    return [
        {
            "example_id": r["example_id"],
            "question": r["question"],
            "answer": r["answer"],
            "predicted": r["predicted"],
            "completion": r["completion"],
            "reward": r["reward"],
            "components": r["components"],
            "phases": ", ".join(r["phases"]),
        }
        for r in picked
    ]


HEADLINE = (
    "eval/accuracy",
    "eval/mean_tokens",
    "eval/degeneration_rate",
    "eval/answer_inclusive_rate",
    "eval/aes",
)


def format_headline(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k.split('/')[1]}={metrics[k]:.3f}" for k in HEADLINE if k in metrics)
