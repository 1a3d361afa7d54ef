"""The online MBT loop, top to bottom.

    round 0:  EVAL the initial student (the baseline for AES and MQI)
    round r:  ROLLOUT -> SCORE -> TEACH (+ verify) -> BUILD (SFT rows, DPO pairs)
              -> TRAIN (SFT, then DPO) -> [GRPO: HANDOFF, ROLLOUT again, GRPO on those samples]
              -> HANDOFF (new weights into the generator) -> EVAL

Each stage reads its inputs from disk and writes `runs/<name>/round-<r>/<stage>/` atomically, then
marks itself done in `state.json`; `train(..., resume=True)` skips what is done. The loop only
sequences, skips and records: what a stage does lives in the module it calls (`rollout`,
`scoring.rows`, `teachers.stage`, `training.build`, `scoring.round_metrics`), and what it drives
(generator, teacher, trainer: `contracts`) comes in through `Drivers`, real by default.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbt_online import preemption
from mbt_online.config import Config, ConfigError, dump_config, load_config
from mbt_online.contracts import Generator, StageFailed, Trainer, TrainJob
from mbt_online.generation.rollout import evaluate_rows, generate_rows
from mbt_online.rundir import (
    STATE_FILE,
    RunState,
    integrity,
    load_dataset_dir,
    load_rows,
    read_metrics,
    save_rows,
    stage_dir,
    write_json_atomic,
    write_round_metrics,
)
from mbt_online.rundir.lock import run_lock
from mbt_online.scoring.round_metrics import (
    format_headline,
    rollout_metrics,
    summarize_eval,
)
from mbt_online.scoring.rows import score_rows
from mbt_online.seeds import stage_seed
from mbt_online.tasks import mixture
from mbt_online.tasks.base import Example
from mbt_online.teachers.contract import Teacher
from mbt_online.teachers.stage import teach_rows, teacher_candidates
from mbt_online.tracking import Tracker, setup_logging, timed

log = logging.getLogger("mbt_online")
# the HF tokenizers' thread pool warns (and can deadlock) once TRL's data workers fork
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class RunExistsError(ConfigError):
    """A new run was asked for in a directory that already holds one (resume it instead)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        super().__init__(
            f"run directory {run_dir} already holds a run: resume it, "
            "or pick another run.name or run directory"
        )


# ---------------------------------------------------------------------------------------------
# what the loop drives


@dataclass
class Drivers:
    """What a run drives, built once per run: the initial student, and factories for the generator
    (per model folder, started lazily), the teacher (per round), the trainer (only when a round
    trains) and the student's token count. `real_drivers` builds vLLM, the configured teacher
    and TRL; the control-flow tests pass fakes."""

    initial: str
    make_generator: Callable[[str], Generator]
    make_teacher: Callable[[int], Teacher]
    make_trainer: Callable[[], Trainer]
    count_tokens: Callable[[str], int]


def real_drivers(cfg: Config, run_dir: Path) -> Drivers:
    """The configured rollout backend for the student, the configured teacher backend, TRL for
    training (in this process, or an `accelerate launch` child in staged mode: `launch`)."""
    from mbt_online.generation.backends import make_generator
    from mbt_online.teachers.stage import round_teacher, student_token_counter

    initial = resolve_student(cfg)
    count = student_token_counter(initial)

    def make_trainer() -> Trainer:
        from mbt_online.training.staged import (
            make_trainer as trainer_for,  # TRL in-process, or staged
        )

        return trainer_for(cfg, run_dir)

    return Drivers(
        initial=initial,
        make_generator=lambda model_dir: make_generator(cfg, model_dir),
        make_teacher=lambda round_: round_teacher(cfg, round_, run_dir, count),
        make_trainer=make_trainer,
        count_tokens=count,
    )


DriversFactory = Callable[[Config, Path], Drivers]


# ---------------------------------------------------------------------------------------------
# entry points


def train(
    cfg: Config | None,
    run_dir: Path | None = None,
    resume: bool = False,
    *,
    rounds: int | None = None,
    allow_changed: bool = False,
    drivers: DriversFactory = real_drivers,
) -> Path:
    """Run (or resume) a multi-round MBT training run; returns the run directory.

    The run directory is locked for the whole call (one writer per run). A resume ignores `cfg`:
    it continues from the run's own config.yaml once its integrity is checked (`open_run`);
    `rounds` first extends it (`extend_run`); `allow_changed` accepts a changed config, data file
    or package version deliberately."""
    if run_dir is None:
        if cfg is None:
            raise ConfigError("run_dir: a resume names its run directory")
        run_dir = cfg.run_dir()
    run_dir = Path(run_dir)
    if resume:
        _check_resumable(run_dir)
    else:
        assert cfg is not None, "a new run needs its config"
        _check_new_run(run_dir, cfg)
    with run_lock(run_dir):
        if resume:
            if rounds is not None:
                extend_run(run_dir, rounds, allow_changed=allow_changed)
            cfg = open_run(run_dir, allow_changed)
        else:
            assert cfg is not None
            prepare_run_dir(run_dir, cfg, resume=False)
        _run(cfg, run_dir, resume, drivers)
    return run_dir


def _run(cfg: Config, run_dir: Path, resume: bool, drivers: DriversFactory) -> None:
    setup_logging(run_dir)
    state = RunState.load(run_dir)
    what = "resuming" if resume else "starting"
    log.info("run %s: %s, %d rounds", run_dir, what, cfg.loop.rounds)
    if state.integrity is None:
        log.warning("%s: no integrity record (an older run): config and data not checked", run_dir)
    train_examples, eval_examples = mixture.load_data(cfg)
    parts = drivers(cfg, run_dir)
    tracker = Tracker(cfg, run_dir)
    session = Session(cfg, run_dir, state, tracker, parts)
    try:
        for round_ in range(cfg.loop.rounds + 1):
            preemption.check(f"round {round_}")  # a safe point: between rounds
            session.run_round(round_, train_examples, eval_examples)
        state.finished = True
        state.save()
        log.info("run finished: %s", run_dir)
    finally:
        session.close()


def extend_run(run_dir: Path, rounds: int, *, allow_changed: bool = False) -> None:
    """Set a run's round count before resuming: a finished run whose curves still improve goes on
    from its last model (its done rounds untouched) instead of being retrained from round 0.
    The config is checked before it is rewritten, and its new hash recorded."""
    run_dir = Path(run_dir)
    _check_resumable(run_dir)
    with run_lock(run_dir):
        open_run(run_dir, allow_changed)
        cfg = load_config(run_dir / "config.yaml", [f"loop.rounds={rounds}"])
        state = RunState.load(run_dir)
        trained = max(state.trained_rounds(), default=0)
        if rounds < trained:
            raise ConfigError(
                f"rounds: {run_dir} has already trained {trained} rounds, not {rounds}"
            )
        dump_config(cfg, run_dir / "config.yaml")
        if state.integrity is not None:
            state.integrity["config_sha256"] = integrity.sha256_file(run_dir / "config.yaml")
        if state.finished and rounds > trained:
            state.finished = False
        state.save()


# ---------------------------------------------------------------------------------------------
# set-up: everything that can fail on user input fails here, before any work


def _check_resumable(run_dir: Path) -> None:
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"resume: {run_dir} has no config.yaml; is it a run directory?")
    if not (run_dir / STATE_FILE).exists():
        raise ConfigError(
            f"resume: {run_dir} has no {STATE_FILE}: the run never started; start it anew"
        )


def _check_new_run(run_dir: Path, cfg: Config) -> None:
    """Everything a new run can check before it creates anything."""
    if (run_dir / STATE_FILE).exists():
        raise RunExistsError(run_dir)
    _check_models(cfg)
    mixture.check_data_paths(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"run directory {run_dir} is not writable ({e.strerror}); "
            "pick a writable run directory or run.runs_dir"
        ) from None


def _check_models(cfg: Config) -> None:
    """The student (and a vllm teacher's model) exist, cached or on the hub, before the run
    directory does: an uncached id offline is refused here, not after config.yaml is written."""
    from mbt_online.models.pretrained import check_model_name, check_student

    check_student(cfg)
    if cfg.teacher.backend == "vllm" and cfg.teacher.model:
        check_model_name(cfg.teacher.model, "teacher.model")


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool) -> None:
    """A new run: its config.yaml, then its state.json created exclusively with the integrity
    record (a second start of the same run fails here, even past the lock). A resume: the checks
    of `open_run`."""
    if resume:
        open_run(run_dir)
        return
    _check_new_run(run_dir, cfg)
    dump_config(cfg, run_dir / "config.yaml")
    state = RunState(path=run_dir / STATE_FILE, integrity=integrity.record(cfg, run_dir))
    try:
        state.create()
    except FileExistsError:
        raise RunExistsError(run_dir) from None


def open_run(run_dir: Path, allow_changed: bool = False) -> Config:
    """The config a resume continues from, after checking the run is what it started as: a
    state.json that passes its schema, a config.yaml with its recorded hash (checked before it
    is parsed: a truncated file still parses), the same data files and package version."""
    _check_resumable(run_dir)
    state = RunState.load(run_dir)  # a StateError (a ConfigError) names the file
    changed = integrity.config_change(state, run_dir)
    if changed and not allow_changed:
        raise ConfigError(f"resume: {changed}; {integrity.ALLOW_HINT}")
    try:
        cfg = load_config(run_dir / "config.yaml")
    except ConfigError as e:
        raise ConfigError(f"resume: {run_dir / 'config.yaml'}: {e}") from None
    problems = [changed] if changed else []
    integrity.refuse_or_renew(
        problems + integrity.other_changes(state, cfg), state, cfg, run_dir, allow_changed
    )
    return cfg


def resolve_student(cfg: Config) -> str:
    """The initial student's HF folder (`models.pretrained.resolve_student`: bootstrap, a known
    name, a local folder or a hub id)."""
    from mbt_online.models.pretrained import resolve_student as resolve

    return resolve(cfg)


# ---------------------------------------------------------------------------------------------
# one round


class Session:
    """What lives across rounds: the live generator, the tracker and the model lineage."""

    def __init__(
        self, cfg: Config, run_dir: Path, state: RunState, tracker: Tracker, drivers: Drivers
    ) -> None:
        self.cfg, self.run_dir, self.state, self.tracker = cfg, run_dir, state, tracker
        self.drivers = drivers
        self.initial = drivers.initial
        self.engine: Generator | None = None
        self.engine_model: str | None = None
        self.adapter: tuple[str, str] | None = None  # (base model dir, adapter dir)

    def model_at(self, round_: int) -> str:
        """The model a round ends with (round 0: the initial student)."""
        return self.state.models.get(str(round_), self.initial)

    def ensure_engine(self, model_dir: str) -> Generator:
        """Start the generator lazily (a resumed run may need none, and one stopped for TRAIN
        starts again here on the new model) and hand off new weights (which also wakes one put to
        sleep for TRAIN: wake the weights, reload them from `model_dir`, wake the KV cache)."""
        if self.engine is None:
            self.engine = self.drivers.make_generator(model_dir)
            self.engine_model = model_dir
        elif self.engine_model != model_dir:
            mode = self.cfg.engine.handoff
            if mode == "lora" and self.adapter:
                self.engine.handoff("lora", *self.adapter)
            else:  # lora with nothing trained as an adapter this round: the merged weights
                self.engine.handoff("reload" if mode == "lora" else mode, model_dir)
            self.engine_model = model_dir
        return self.engine

    def release_engine(self) -> None:
        """Before TRAIN: the generator gives its devices back as `engine.between_stages` says
        (keep: nothing; stop: closed, restarted by `ensure_engine`; sleep: woken by its handoff)."""
        from mbt_online.generation.backends import between_stages

        mode = between_stages(self.cfg)
        if self.engine is None or mode == "keep":
            return
        log.info("engine: %s for TRAIN", "stopped" if mode == "stop" else "asleep")
        self.engine.release(mode)
        if mode == "stop":
            self.engine = self.engine_model = None

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.tracker.finish()

    def run_round(self, r: int, train_ex: list[Example], eval_ex: list[Example]) -> None:
        if self.state.done(r, "eval"):
            log.info("round %d: already done, skipping", r)
            return
        timings: dict[str, float] = {}
        metrics: dict[str, Any] = {"round": r}
        if r > 0:
            metrics.update(self.train_stages(r, train_ex, timings))
        with timed("eval", timings):
            eval_rows = self.stage(r, "eval", lambda: self.evaluate(r, eval_ex), mark=False)
        metrics.update(summarize_eval(eval_rows, self.cfg, read_metrics(self.run_dir)))
        metrics.update(timings)
        write_round_metrics(self.run_dir, metrics)
        if self.cfg.eval.judges:
            from mbt_online.evaluation.judges import judge_round

            with timed("judge", timings), self.outage_logged(r):
                metrics.update(judge_round(self.run_dir, r, self.cfg.eval.judges, self.cfg))
            metrics.update(timings)
            write_round_metrics(self.run_dir, metrics)
        self.tracker.log_round(metrics, eval_rows)
        self.state.mark(r, "eval")
        log.info("round %d: %s", r, format_headline(metrics))

    def train_stages(
        self, r: int, train_ex: list[Example], timings: dict[str, float]
    ) -> dict[str, Any]:
        """ROLLOUT -> SCORE -> TEACH -> BUILD -> TRAIN from the previous round's model; returns
        the round's train/, rollout/, reward/ and teacher/ metrics."""
        cfg, examples = self.cfg, {ex.id: ex for ex in train_ex}
        questions = mixture.round_questions(train_ex, r, cfg.loop.questions_per_round)
        start_model = self.model_at(r - 1)
        with timed("rollout", timings):
            raw = self.stage(r, "rollout", lambda: self.rollout(r, start_model, questions))
        grpo = cfg.train.grpo.enabled
        with timed("score", timings):
            scored = self.stage(r, "score", lambda: score_rows(raw, examples, cfg))
        with timed("teach", timings), self.outage_logged(r):
            taught = self.stage(r, "teach", lambda: self.teach(r, scored, examples))
        with timed("build", timings):
            self.build(r, scored, taught, examples)
        with timed("train", timings):
            metrics = self.train_round(r, start_model)
        if grpo:
            trained = bool(metrics.get("train/sft_rows") or metrics.get("train/dpo_pairs"))
            metrics.update(self.grpo_stages(r, questions, scored, trained, examples, timings))
        metrics.update(rollout_metrics(scored, taught))
        return metrics

    def grpo_stages(
        self,
        r: int,
        questions: list[Example],
        scored: list[dict],
        trained: bool,
        examples: dict,
        timings: dict[str, float],
    ) -> dict[str, float]:
        """GRPO after TRAIN, on samples drawn from the weights it starts from: TRAIN's model handed
        to the engine and the round's questions rolled out again (`grpo_rollout`), or, when TRAIN
        trained no row (GRPO alone: its model is the round's start), the round's own ROLLOUT."""
        model = self.model_at(r)  # TRAIN's model until GRPO is marked done

        def samples() -> list[dict[str, Any]]:
            if not trained:
                return scored
            seed = stage_seed(self.cfg.rollout.seed, r, "grpo_rollout")
            engine = self.ensure_engine(model)
            raw = generate_rows(engine, questions, self.cfg, self.cfg.rollout, seed, token_ids=True)
            return score_rows(raw, examples, self.cfg)

        with timed("grpo_rollout", timings):
            rows = self.stage(r, "grpo_rollout", samples)
        with timed("grpo", timings):
            return self.train_grpo(r, model, rows)

    @contextlib.contextmanager
    def outage_logged(self, r: int) -> Iterator[None]:
        """A stage that asks an endpoint may fail on an outage (`StageFailed`), unmarked: say so in
        run.log with what to do, and let it end the run."""
        try:
            yield
        except StageFailed as e:
            e.run_dir = self.run_dir
            log.error(
                "round %d: %s; the stage is not marked done: resume with "
                "`mbt-online train --resume %s` once the endpoint answers "
                "(answers already received are cached)",
                r,
                e,
                self.run_dir,
            )
            raise

    def stage(
        self, r: int, name: str, compute: Callable[[], list[dict]], mark: bool = True
    ) -> list[dict[str, Any]]:
        """Run a stage unless done; either way return its rows as read back from disk.

        EVAL is marked done only after its metrics line is written (mark=False here), so a run
        killed in between reuses the eval artifact, which is complete because it was written
        atomically."""
        out = stage_dir(self.run_dir, r, name)
        if not (self.state.done(r, name) or (not mark and out.exists())):
            preemption.check(f"round {r} {name}")  # a safe point: before each stage's work
            save_rows(compute(), out)
            if mark:
                self.state.mark(r, name)
        return load_rows(out)

    # -- stage bodies: each a call into the module that does the work ---------------------------

    def rollout(self, r: int, model: str, questions: list[Example]) -> list[dict[str, Any]]:
        seed = stage_seed(self.cfg.rollout.seed, r, "rollout")
        engine, grpo = self.ensure_engine(model), self.cfg.train.grpo.enabled
        return generate_rows(engine, questions, self.cfg, self.cfg.rollout, seed, token_ids=grpo)

    def teach(self, r: int, scored: list[dict], examples: dict) -> list[dict[str, Any]]:
        make = functools.partial(self.drivers.make_teacher, r)
        return teach_rows(scored, examples, self.cfg, make, desc=f"teach round {r}")

    def evaluate(self, r: int, eval_ex: list[Example]) -> list[dict[str, Any]]:
        """EVAL: every seed of `eval.sampling` (`generation.rollout.evaluate_rows`)."""
        return evaluate_rows(self.ensure_engine(self.model_at(r)), eval_ex, self.cfg, r)

    def build(self, r: int, scored: list[dict], taught: list[dict], examples: dict) -> None:
        from mbt_online.training.build import dpo_pairs, sft_rows

        if self.state.done(r, "build"):
            return
        preemption.check(f"round {r} build")
        cfg = self.cfg
        sft = sft_rows(scored, taught, examples, cfg) if cfg.train.sft.enabled else []
        pairs = []
        if cfg.train.dpo.enabled:
            chosen = teacher_candidates(taught, examples, cfg, self.drivers.count_tokens)
            pairs = dpo_pairs(scored, chosen, examples, cfg)
        save_rows(sft, stage_dir(self.run_dir, r, "build") / "sft")
        save_rows(pairs, stage_dir(self.run_dir, r, "build") / "dpo")
        log.info("round %d: built %d SFT rows and %d DPO pairs", r, len(sft), len(pairs))
        self.state.mark(r, "build")

    def train_round(self, r: int, start_model: str) -> dict[str, float]:
        """SFT then DPO from the round's starting model; records the round's final model."""
        cfg, out = self.cfg, stage_dir(self.run_dir, r, "train")
        metrics_file = out / "train_metrics.json"
        if self.state.done(r, "train"):
            return json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        preemption.check(f"round {r} train")
        sft = load_dataset_dir(stage_dir(self.run_dir, r, "build") / "sft")
        pairs = load_dataset_dir(stage_dir(self.run_dir, r, "build") / "dpo")
        metrics: dict[str, float] = {"train/sft_rows": len(sft), "train/dpo_pairs": len(pairs)}
        job = TrainJob(
            start_model=start_model,
            sft=sft,
            pairs=pairs if cfg.train.dpo.enabled else [],
            out_dir=out,
            seed=stage_seed(cfg.run.seed, r, "train"),
            reference=self.initial if cfg.train.dpo.reference == "initial" else None,
        )
        return self.run_trainer(r, "train", job, metrics)

    def train_grpo(self, r: int, model: str, samples: list[dict]) -> dict[str, float]:
        """GRPO from TRAIN's model on the stage's samples (RL rewards, all-equal groups dropped);
        records the round's final model."""
        from mbt_online.scoring.rl_reward import grpo_samples

        cfg, out = self.cfg, stage_dir(self.run_dir, r, "grpo")
        if self.state.done(r, "grpo"):
            path = out / "grpo_metrics.json"
            return json.loads(path.read_text()) if path.exists() else {}
        preemption.check(f"round {r} grpo")
        g = cfg.train.grpo
        rows, metrics = grpo_samples(samples, cfg.rollout.max_tokens, cfg.reward.weights, g.reward)
        save_rows(rows, out / "samples")
        dropped, groups = metrics["train/grpo_dropped_groups"], metrics["train/grpo_groups"]
        log.info("round %d: GRPO on %d samples (%d of %d groups dropped: all rewards equal)",
                 r, len(rows), dropped, groups)  # fmt: skip
        seed, grpo = stage_seed(cfg.run.seed, r, "grpo"), load_dataset_dir(out / "samples")
        job = TrainJob(start_model=model, sft=[], pairs=[], out_dir=out, seed=seed, grpo=grpo)
        return self.run_trainer(r, "grpo", job, metrics)

    def run_trainer(
        self, r: int, stage: str, job: TrainJob, metrics: dict[str, float]
    ) -> dict[str, float]:
        """TRAIN's and GRPO's common end: the engine gives its devices back, the job trains, the
        stage's metrics are written (wall-clock numbers under timing/: everything else must
        replay exactly on resume) and the round's model recorded as the stage is marked done."""
        self.release_engine()
        trained = self.tracker.streamed_trainer(r, self.drivers.make_trainer()).train(job)
        for key, value in trained.metrics.items():
            if key.endswith("_seconds"):
                key = f"timing/{key.split('/')[-1].removesuffix('_seconds')}"
                key += "_fit" if key == f"timing/{stage}" else ""
            elif key == "train/peak_memory_gib" and stage != "train":
                key = f"train/peak_memory_{stage}_gib"
            metrics[key] = value
        if stage == "train" or trained.adapter:
            self.adapter = trained.adapter
        job.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(job.out_dir / f"{stage}_metrics.json", metrics)
        self.state.models[str(r)] = trained.model
        self.state.mark(r, stage)
        return metrics
