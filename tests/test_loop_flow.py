"""The loop's control flow in seconds: the real `loop.train`/`Session` over a tiny world, with a
fake generator, teacher and trainer (tests/fakes.py) in place of vLLM, the teacher backends and
TRL.

Covered: stages skipped when done, resume after a kill at every stage (and between EVAL's metrics
line and its mark) ending exactly where an uninterrupted run ends, the lineage of models, one
metrics line per round, and the hand-off calls the generator sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import (
    ROUNDS,
    STUDENT,
    FakeGenerator,
    Fakes,
    FakeTeacher,
    FakeTrainer,
    Killed,
    artifacts,
    model_name,
    quick_datasets,
    run,
    tiny_config,
    without_timing,
)
from kills import KILLS, fail_on_call, fail_on_save  # noqa: F401

from mbt_online import loop
from mbt_online.config import Config, load_config
from mbt_online.evaluation import evaluate as evaluation
from mbt_online.rundir import read_metrics

# the fakes live in tests/fakes.py; re-exported for the test modules that import them from here
__all__ = [
    "ROUNDS",
    "STUDENT",
    "FakeGenerator",
    "FakeTeacher",
    "FakeTrainer",
    "Fakes",
    "Killed",
    "artifacts",
    "model_name",
    "quick_datasets",
    "run",
    "tiny_config",
    "without_timing",
]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict, Fakes]:
    """One uninterrupted run: the reference every resumed run must end identical to."""
    cfg = tiny_config(tmp_path_factory.mktemp("clean"))
    fakes = Fakes(cfg)
    run_dir = run(cfg, fakes)
    return run_dir, artifacts(run_dir), fakes


def test_a_run_trains_each_round_from_the_last_model(clean):
    run_dir, art, fakes = clean
    assert [m["round"] for m in art["metrics"]] == [0, 1, 2]
    state = art["state"]
    assert state["finished"]
    assert state["models"] == {"1": "round-1/train/model", "2": "round-2/train/model"}
    # lineage: round 1 starts from the initial student, round 2 from round 1's model
    trained = fakes.of("train")
    assert [(c[1], c[2]) for c in trained] == [(STUDENT, 1), ("round-1/train/model", 2)]
    assert all(sft > 0 for *_, sft, _ in trained), "the fake teacher verified something"
    # every stage of every trained round is done, eval marked last
    stages = ("rollout", "score", "teach", "build", "train", "eval")
    assert state["completed"] == [
        "round-0/eval",
        *(f"round-{r}/{s}" for r in (1, 2) for s in stages),
    ]
    r1 = art["metrics"][1]
    assert r1["rollout/samples"] == 8 and r1["teacher/requests"] >= 1
    assert r1["train/sft_rows"] == r1["teacher/accepted"] and "train/sft_loss" in r1
    assert "train/sft_seconds" not in r1 and "timing/sft" in read_metrics(run_dir)[1]
    assert art["metrics"][0]["eval/aes"] == pytest.approx(0.0)


def test_the_generator_is_handed_each_new_model_once(clean):
    _, _, fakes = clean
    seen = [c[:3] if c[0] == "generate" else c for c in fakes.calls if c[0] != "teach"]
    cfg = tiny_config(Path("unused"))
    eval_seed, roll_seed = cfg.eval.sampling.seed + 10_000, cfg.rollout.seed
    assert [c for c in seen if c[0] != "train"] == [
        ("start", STUDENT),
        ("generate", STUDENT, eval_seed + 0),  # round 0 EVAL: the baseline
        ("generate", STUDENT, roll_seed + 1),  # round 1 ROLLOUT: same weights, no hand-off
        ("handoff", "reload", "round-1/train/model", None),
        ("generate", "round-1/train/model", eval_seed + 1),
        ("generate", "round-1/train/model", roll_seed + 2),
        ("handoff", "reload", "round-2/train/model", None),
        ("generate", "round-2/train/model", eval_seed + 2),
        ("close",),
    ]


def test_lora_handoff_serves_the_adapter_on_its_base(tmp_path):
    cfg = tiny_config(tmp_path, **{"engine.handoff": "lora", "train.method": "lora"})
    fakes = Fakes(cfg)
    run(cfg, fakes)
    assert fakes.of("handoff") == [
        ("handoff", "lora", STUDENT, "adapter"),
        ("handoff", "lora", "round-1/train/model", "adapter"),
    ]


def test_a_finished_run_resumed_does_nothing_again(clean, tmp_path):
    run_dir, art, _ = clean
    again = Fakes(tiny_config(tmp_path))
    loop.train(load_config(run_dir / "config.yaml"), run_dir, resume=True, drivers=again.drivers)
    assert again.calls == [], "no generator, teacher or trainer for a finished run"
    assert artifacts(run_dir) == art
    assert "round 2: already done, skipping" in (run_dir / "run.log").read_text()


def test_the_eval_command_replays_a_rounds_evaluation(clean):
    run_dir, art, fakes = clean

    def make_generator(cfg: Config, model_dir: str) -> FakeGenerator:
        return FakeGenerator(model_dir, fakes.answers, [])

    out = evaluation.evaluate_round(run_dir, 1, make_generator=make_generator)
    assert out["round"] == 1 and out["questions"] == 3
    logged = art["metrics"][1]
    assert {k: out[k] for k in logged if k.startswith("eval/")} == {
        k: v for k, v in logged.items() if k.startswith("eval/")
    }


@pytest.mark.parametrize("where", list(KILLS))
def test_resume_after_a_kill_ends_like_an_uninterrupted_run(where, clean, tmp_path, monkeypatch):
    _, reference, _ = clean
    cfg = tiny_config(tmp_path)
    fakes = Fakes(cfg)
    with monkeypatch.context() as mp:
        KILLS[where](mp, fakes)
        with pytest.raises(Killed):
            run(cfg, fakes)
    run_dir = Path(cfg.run.runs_dir) / cfg.run.name
    state = json.loads((run_dir / "state.json").read_text())
    stage = where.removesuffix("-mark")
    assert f"round-1/{stage}" not in state["completed"] and not state["finished"]
    lines = [m["round"] for m in read_metrics(run_dir)]
    assert lines == ([0, 1] if where == "eval-mark" else [0])

    resumed = Fakes(cfg)
    run(cfg, resumed, resume=True)
    assert artifacts(run_dir) == reference
    # what was done before the kill is not done again
    order = ("rollout", "score", "teach", "build", "train", "eval")
    before = order.index(stage)
    assert len(resumed.of("train")) == (2 if before <= order.index("train") else 1)
    teach_rounds = [c[1] for c in resumed.of("teach")]
    assert teach_rounds == ([1, 2] if before <= order.index("teach") else [2])
    assert "resuming" in (run_dir / "run.log").read_text()


def test_library_errors_name_parameters_and_the_cli_names_flags(clean):
    from mbt_online.cli import flag_wording
    from mbt_online.config import ConfigError

    run_dir = clean[0]
    cases = [
        (
            lambda: evaluation.evaluate_round(run_dir, 1, distractors=1),
            "distractors: only for a data",
        ),
        (lambda: evaluation.evaluate_round(run_dir, 1, save=run_dir), "save: "),
        (lambda: evaluation.evaluate_round(run_dir, 1, "hotpotqa", run_dir / "none"), "path: file"),
        (lambda: loop.extend_run(run_dir, 1), "rounds: "),
    ]
    for call, start in cases:
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value).startswith(start) and "--" not in str(e.value)
        assert flag_wording(e.value) == f"--{e.value}"
    with pytest.raises(loop.RunExistsError) as e:
        loop.train(load_config(run_dir / "config.yaml"), run_dir)
    assert "--" not in str(e.value)
    assert f"mbt-online train --resume {run_dir}" in flag_wording(e.value)


# -- GRPO: after TRAIN, on samples drawn again from TRAIN's model ----------------------------------


def test_grpo_rolls_out_again_from_trains_model_and_learns_on_those_samples(tmp_path):
    cfg = tiny_config(tmp_path, **{"train.grpo.enabled": "true"})
    fakes = Fakes(cfg)
    run_dir = run(cfg, fakes)
    trains = [c for c in fakes.calls if c[0] in ("train", "grpo")]
    assert [c[0] for c in trains] == ["train", "grpo"] * ROUNDS
    for r in range(1, ROUNDS + 1):
        train_call, grpo_call = trains[2 * r - 2], trains[2 * r - 1]
        # GRPO starts from TRAIN's model; its samples were drawn from that model after a handoff
        assert train_call[1] == (STUDENT if r == 1 else f"round-{r - 1}/grpo/model")
        assert grpo_call[1] == f"round-{r}/train/model"
        assert ("generate", f"round-{r}/train/model") in [c[:2] for c in fakes.of("generate")]
        samples = loop.load_rows(run_dir / f"round-{r}" / "grpo_rollout")
        assert samples and all(s["completion_ids"] and s["logprobs"] for s in samples)
    metrics = read_metrics(run_dir)
    assert all("train/grpo_groups" in m and "train/grpo_loss" in m for m in metrics[1:])
    # the next round starts from GRPO's model, and EVAL sees it
    assert trains[2][1] == "round-1/grpo/model"


def test_grpo_alone_learns_on_the_rounds_own_rollout(tmp_path):
    cfg = tiny_config(
        tmp_path,
        **{
            "train.grpo.enabled": "true",
            "train.sft.enabled": "false",
            "train.dpo.enabled": "false",
            "teacher.mode": "none",
        },
    )
    fakes = Fakes(cfg)
    run_dir = run(cfg, fakes)
    assert len(fakes.of("generate")) == ROUNDS * 2 + 1  # ROLLOUT and EVAL only, no second rollout
    rollout = loop.load_rows(run_dir / "round-1" / "rollout")
    again = loop.load_rows(run_dir / "round-1" / "grpo_rollout")
    assert [r["completion"] for r in again] == [r["completion"] for r in rollout]


def test_a_run_killed_in_grpo_resumes_like_an_uninterrupted_one(tmp_path):
    cfg = tiny_config(tmp_path / "a", **{"train.grpo.enabled": "true"})
    reference = artifacts(run(cfg, Fakes(cfg)))
    cfg = tiny_config(tmp_path / "b", **{"train.grpo.enabled": "true"})
    fakes = Fakes(cfg)
    real_train = FakeTrainer.train

    def dying(self, job):
        if len(job.grpo):
            raise Killed("grpo")
        return real_train(self, job)

    FakeTrainer.train = dying
    try:
        with pytest.raises(Killed):
            run(cfg, fakes)
    finally:
        FakeTrainer.train = real_train
    run_dir = run(cfg, Fakes(cfg), resume=True)
    assert artifacts(run_dir) == reference
