"""The fake drivers the loop's control-flow and fault tests run on (a test helper, not a test): a
tiny world config, a generator, teacher and trainer that stand in for vLLM, the teacher backends and
TRL, and `artifacts`, what a finished run left behind, to compare runs by.

Imported by tests/test_loop_flow.py (which re-exports them for older importers) and tests/faults/.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from tiny_runs import without_timing

from mbt_online import loop
from mbt_online.config import Config, load_config
from mbt_online.contracts import Completion, Trained, TrainJob
from mbt_online.prompts import format_target
from mbt_online.rundir import load_rows, read_metrics
from mbt_online.tasks import mixture
from mbt_online.teachers.contract import TeachRequest, TeachResult

STUDENT = "fake-student"
ROUNDS = 2


class Killed(RuntimeError):
    """A simulated kill: the process dies in the middle of a stage."""


def tiny_config(runs_dir: Path, **extra: object) -> Config:
    """Two rounds on a handful of world questions; nothing on disk but the run directory."""
    base: dict[str, object] = {
        "run.name": "flow",
        "run.runs_dir": str(runs_dir),
        "data.train.limit": 4,
        "data.eval.limit": 3,
        "world.questions": 8,
        # the drivers' initial model is STUDENT; the config names one a new run's checks accept
        "student.model": "bootstrap",
        "rollout.samples": 2,
        "loop.rounds": ROUNDS,
        "tracking.wandb_mode": "disabled",
        "tracking.table_rows": 2,
    }
    base.update(extra)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def model_name(model_dir: str) -> str:
    """A model's identity independent of where its run lives: `round-1/train/model`."""
    return "/".join(Path(model_dir).parts[-3:]) if model_dir != STUDENT else STUDENT


def draw(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


# ---------------------------------------------------------------------------------------------
# fakes


class FakeGenerator:
    """Canned completions: correct for some (model, seed, prompt, sample), else a wrong answer or
    a truncated loop; what it serves changes with each hand-off, like real weights would."""

    def __init__(self, model_dir: str, answers: dict[str, str], calls: list, fail_at: int = 0):
        self.model, self.answers, self.calls, self.fail_at = model_dir, answers, calls, fail_at
        self.generated = 0
        self.state = "live"  # "asleep" after release("sleep"), "closed" after close or stop
        calls.append(("start", model_name(model_dir)))

    def generate(self, messages, *, n, temperature, top_p, top_k, max_tokens, seed, logprobs=False):
        if self.state != "live":  # a real engine would wake itself; the loop must hand off first
            raise RuntimeError(f"generate on a generator that is {self.state}")
        self.generated += 1
        if self.generated == self.fail_at:
            raise Killed("generate")
        self.calls.append(("generate", model_name(self.model), seed, len(messages), n))
        return [
            [self._sampled(self._completion(chat, seed, i, k), logprobs) for k in range(n)]
            for i, chat in enumerate(messages)
        ]

    @staticmethod
    def _sampled(c: Completion, logprobs: bool) -> Completion:
        """With `logprobs` (GRPO's samples), token ids and log-probs as an engine reports them."""
        if logprobs:
            n = c.completion_tokens
            c.prompt_ids, c.token_ids, c.logprobs = [1] * 5, [2] * n, [-0.5] * n
        return c

    def _completion(self, chat: list[dict], seed: int, i: int, k: int) -> Completion:
        prompt = chat[-1]["content"]
        answer = self.answers[max((q for q in self.answers if q in prompt), key=len)]
        roll = draw(model_name(self.model), seed, i, k) % 4
        if roll == 3:
            return Completion("Let me check again. " * 20, "length", 50, 64)
        text = format_target("Goal: follow the hops.", answer if roll < 2 else "Nobody")
        return Completion(text, "stop", 50, len(text.split()))

    def handoff(self, mode, model_dir, adapter_dir=None):
        if self.state == "closed":
            raise RuntimeError("handoff to a closed generator")
        if self.state == "asleep":
            self.calls.append(("wake", model_name(model_dir)))
        self.state = "live"
        self.calls.append(("handoff", mode, model_name(model_dir), adapter_dir and "adapter"))
        self.model = adapter_dir or model_dir

    def release(self, mode):
        self.calls.append(("release", mode))
        if mode == "stop":
            self.close()
        else:
            self.state = "asleep"

    def close(self):
        self.state = "closed"
        self.calls.append(("close",))


class FakeTeacher:
    """Verifies about half its requests, with a trace that reaches the gold answer."""

    def __init__(self, round_: int, calls: list, fail: bool = False):
        self.round, self.calls, self.fail = round_, calls, fail

    def teach(self, requests: list[TeachRequest]) -> list[TeachResult]:
        if self.fail:
            raise Killed("teach")
        self.calls.append(("teach", self.round, len(requests)))
        return [self._result(req) for req in requests]

    def _result(self, req: TeachRequest) -> TeachResult:
        ok = draw(req.example.id, req.draft, self.round) % 2 == 0
        trace = f"Goal: find it. Check: the documents say {req.example.answer}."
        reasons = [] if ok else ["phases:missing verification"]
        return TeachResult(req.example.id, req.mode, trace, ok, reasons, 1, "fake")


class FakeTrainer:
    """Writes a new model folder per round; records what it was asked to train."""

    def __init__(self, calls: list, fail: bool = False):
        self.calls, self.fail = calls, fail

    def train(self, job: TrainJob) -> Trained:
        model = job.out_dir / "model"
        model.mkdir(parents=True, exist_ok=True)  # a half-written folder is what a kill leaves
        if self.fail:
            raise Killed("train")
        if len(job.grpo):
            self.calls.append(("grpo", model_name(job.start_model), len(job.grpo)))
            metrics = {"train/grpo_loss": 0.1, "train/grpo_seconds": 0.5}
            return Trained(str(model), (job.start_model, str(job.out_dir / "adapter")), metrics)
        self.calls.append(
            ("train", model_name(job.start_model), job.seed, len(job.sft), len(job.pairs))
        )
        metrics = {"train/sft_loss": 1.0 / (1 + len(job.sft)), "train/sft_seconds": 0.5}
        return Trained(str(model), (job.start_model, str(job.out_dir / "adapter")), metrics)


class Fakes:
    """One run's drivers and the calls they saw; `fail` names the fake that dies, and when."""

    def __init__(self, cfg: Config, fail: str = "", fail_at: int = 0):
        train_ex, eval_ex = mixture.load_data(cfg)
        self.answers = {ex.question: ex.answer for ex in [*train_ex, *eval_ex]}
        self.calls: list = []
        self.fail, self.fail_at = fail, fail_at

    def drivers(self, cfg: Config, run_dir: Path) -> loop.Drivers:
        def make_generator(model_dir: str) -> FakeGenerator:
            at = self.fail_at if self.fail == "generator" else 0
            return FakeGenerator(model_dir, self.answers, self.calls, at)

        return loop.Drivers(
            initial=STUDENT,
            make_generator=make_generator,
            make_teacher=lambda r: FakeTeacher(r, self.calls, self.fail == "teacher"),
            make_trainer=lambda: FakeTrainer(self.calls, self.fail == "trainer"),
            count_tokens=lambda text: len(text.split()),
        )

    def of(self, kind: str) -> list:
        return [c for c in self.calls if c[0] == kind]


@pytest.fixture(scope="module", autouse=True)
def quick_datasets():
    """Stage folders without hashing every row into a fingerprint (half of a tiny stage's time;
    the rows written are the same) and without progress bars."""
    import datasets
    from datasets.fingerprint import generate_random_fingerprint

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            datasets.arrow_dataset, "generate_fingerprint", lambda _: generate_random_fingerprint()
        )
        datasets.disable_progress_bars()
        yield
        datasets.enable_progress_bars()


def run(cfg: Config, fakes: Fakes, resume: bool = False) -> Path:
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    return loop.train(cfg, run_dir, resume=resume, drivers=fakes.drivers)


# ---------------------------------------------------------------------------------------------
# what a finished run left behind


def artifacts(run_dir: Path) -> dict[str, object]:
    """Every stage's rows, the train metrics, the state (model paths made relative) and metrics."""
    out: dict[str, object] = {}
    for path in sorted(run_dir.glob("round-*/*")):
        key = str(path.relative_to(run_dir))
        if path.name == "build":
            out[key] = [load_rows(path / "sft"), load_rows(path / "dpo")]
        elif path.name == "train":
            out[key] = json.loads((path / "train_metrics.json").read_text())
        elif path.name == "grpo":
            out[key] = [
                json.loads((path / "grpo_metrics.json").read_text()),
                load_rows(path / "samples"),
            ]
        else:
            out[key] = load_rows(path)
    state = json.loads((run_dir / "state.json").read_text())
    state["models"] = {r: model_name(m) for r, m in state["models"].items()}
    # config.yaml names its runs_dir, so the same run made elsewhere records another config hash
    state["integrity"] = {**state["integrity"], "config_sha256": "(differs by folder)"}
    out["state"] = state
    out["metrics"] = without_timing(read_metrics(run_dir))
    return out
