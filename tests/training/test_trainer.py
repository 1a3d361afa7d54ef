"""SFT and DPO on the tiny student: what the trainers learn, what they write, and that they repeat.

Log-probabilities are measured independently of TRL with plain transformers, on the same chat
template tokenization (prompt with generation prompt, completion = the rest of the rendered turn).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from difflib import SequenceMatcher
from pathlib import Path

import pytest
import torch
from _train_worker import rows as worker_rows  # tests/ is on sys.path
from _train_worker import train_config
from datasets import Dataset, load_from_disk
from safetensors.torch import load_file

from mbt_online.config import TrainConfig
from mbt_online.training.args import common_args
from mbt_online.training.saving import CHECKPOINTS, last_checkpoint
from mbt_online.training.trainer import (
    METRICS_FILE,
    SCRATCH,
    STAGE_HISTORY,
    ProgressLog,
    dpo_dataset,
    dpo_trainer,
    load_reference,
    sft_dataset,
    sft_trainer,
    train_dpo,
    train_sft,
)

PROMPT = [
    {"role": "system", "content": "Answer the multi-hop question."},
    {"role": "user", "content": "Who directed the film that won Best Picture in 1998?"},
]
TARGET = (
    "<think>\nThe question asks for a director. The film is Titanic; James Cameron directed it."
    "\n</think>\n\n<answer>James Cameron</answer>"
)
REJECTED = (
    "<think>\nMaybe it was Spielberg. Maybe it was Spielberg. Maybe it was Spielberg.\n</think>"
    "\n\n<answer>Steven Spielberg</answer>"
)
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Dublin"]


def _cfg(method: str = "full", **sft: float) -> TrainConfig:
    cfg = TrainConfig(method=method, threads=1)
    cfg.lora.r, cfg.lora.alpha = 8, 16
    cfg.sft.learning_rate = sft.get("lr", 3e-3)
    cfg.sft.batch_size, cfg.sft.epochs, cfg.sft.warmup_ratio = 8, sft.get("epochs", 2.0), 0.0
    cfg.sft.max_grad_norm = 1.0
    cfg.dpo.learning_rate, cfg.dpo.batch_size, cfg.dpo.epochs = 1e-3, 8, 2.0
    return cfg


def _varied_rows() -> Dataset:
    """32 distinct rows, so the seed's shuffle order changes the batches."""
    items = []
    for i in range(32):
        city = CITIES[i % len(CITIES)]
        question = [{"role": "user", "content": f"Question {i}: which city is the capital?"}]
        items.append((question, f"<think>\nIt is {city}.\n</think>\n\n<answer>{city}</answer>"))
    return sft_dataset(items)


def _load(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(model_dir))


def _encode(tok, prompt: list[dict], completion: str) -> tuple[list[int], list[int]]:
    """Prompt ids (with the generation prompt) and the completion ids that follow them."""
    p_text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    msgs = [*prompt, {"role": "assistant", "content": completion}]
    full_text = tok.apply_chat_template(msgs, tokenize=False)
    p_ids = tok(p_text, add_special_tokens=False)["input_ids"]
    full_ids = tok(full_text, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(p_ids)] == p_ids
    return p_ids, full_ids[len(p_ids) :]


@torch.no_grad()
def _completion_logprob(model_dir: Path, prompt: list[dict], completion: str) -> float:
    model, tok = _load(model_dir)
    p_ids, c_ids = _encode(tok, prompt, completion)
    ids = torch.tensor([p_ids + c_ids])
    logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    positions = torch.arange(len(p_ids) - 1, ids.shape[1] - 1)
    return float(logp[positions, ids[0, len(p_ids) :]].sum())


@torch.no_grad()
def _target_reproduction(model_dir: Path, prompt: list[dict], completion: str) -> tuple[float, int]:
    """How much of the target the model produces itself after the prompt.

    (share of target positions where the next-token argmax is the target token, given the target
    so far; longest run of target tokens inside the free greedy continuation)
    """
    model, tok = _load(model_dir)
    p_ids, c_ids = _encode(tok, prompt, completion)
    logits = model(torch.tensor([p_ids + c_ids])).logits[0, len(p_ids) - 1 : -1]
    top1 = float((logits.argmax(-1) == torch.tensor(c_ids)).float().mean())
    out = model.generate(
        torch.tensor([p_ids]), max_new_tokens=len(c_ids), do_sample=False, eos_token_id=None
    )
    generated = out[0, len(p_ids) :].tolist()
    run = SequenceMatcher(None, generated, c_ids, autojunk=False).find_longest_match()
    return top1, run.size


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


# ---------------------------------------------------------------- fast: no training


def test_empty_data_returns_the_input_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    empty = Dataset.from_list([])
    res = train_sft(tiny_model_dir, empty, tmp_path / "sft", _cfg(), seed=0)
    assert res.model_dir == tiny_model_dir and res.adapter_dir is None
    assert res.metrics == {"train/sft_rows": 0.0, "train/sft_steps": 0.0}
    assert json.loads((tmp_path / "sft" / METRICS_FILE).read_text())["train/sft_rows"] == 0
    res = train_dpo(tiny_model_dir, None, empty, tmp_path / "dpo", _cfg("lora"), seed=0)
    assert res.model_dir == tiny_model_dir and res.metrics["train/dpo_rows"] == 0.0
    assert sorted(p.name for p in (tmp_path / "dpo").iterdir()) == [METRICS_FILE]


def test_row_builders_make_trl_conversational_shapes() -> None:
    rows = sft_dataset([(PROMPT, TARGET)])
    assert rows[0] == {"prompt": PROMPT, "completion": [{"role": "assistant", "content": TARGET}]}
    pairs = dpo_dataset([(PROMPT, TARGET, REJECTED)])
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": TARGET}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": REJECTED}]


def test_bf16_is_opt_in_and_threads_are_restored() -> None:
    # TRL would default bf16 to True; here it follows the caller (and CPU autocast supports it).
    assert common_args(TrainConfig(), "x", 0, bf16=False)["bf16"] is False
    cuda = torch.cuda.is_available()
    assert common_args(TrainConfig(), "x", 0, bf16=True)["bf16"] is (
        torch.cuda.is_bf16_supported() if cuda else True
    )
    # in a fresh process: a vLLM engine started earlier in this one (another test on this worker)
    # leaves torch.set_num_threads a no-op process-wide
    check = (
        "import torch\n"
        "from mbt_online.training.steps import torch_threads\n"
        "torch.set_num_threads(2)\n"
        "with torch_threads(1):\n"
        "    assert torch.get_num_threads() == 1\n"
        "assert torch.get_num_threads() == 2\n"
        "print('restored')\n"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "restored", out.stderr[-2000:]


def test_reference_policy(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.symlink_to(tiny_model_dir)  # same folder under another name still counts as "same"
    # LoRA against its own starting point: no copy, TRL disables the adapter instead.
    assert load_reference(tiny_model_dir, None, lora=True, bf16=False) is None
    assert load_reference(tiny_model_dir, other, lora=True, bf16=False) is None
    # Full FT always needs a frozen copy; bf16 training keeps the forward-only copy in bf16.
    ref = load_reference(tiny_model_dir, None, lora=False, bf16=True)
    assert ref is not None and ref.dtype == torch.bfloat16 and not ref.training


# ---------------------------------------------------------------- slow: TRL runs


@pytest.mark.slow
def test_sft_collated_labels_mask_the_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = sft_dataset([(PROMPT, TARGET), (PROMPT[1:], REJECTED)])
    trainer = sft_trainer(tiny_model_dir, rows, _cfg(), 0, tmp_path)
    assert trainer.completion_only_loss is True
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tok = trainer.processing_class
    for i, (prompt, completion) in enumerate([(PROMPT, TARGET), (PROMPT[1:], REJECTED)]):
        p_ids, c_ids = _encode(tok, prompt, completion)
        assert tok.decode(c_ids[-2:]) == "<|im_end|>\n"
        c_ids = c_ids[:-1]  # the template's newline after the end of turn is not trained
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        n = len(p_ids) + len(c_ids)
        assert ids[:n] == p_ids + c_ids  # right-padded: sequence first, then pads
        assert labels[: len(p_ids)] == [-100] * len(p_ids)
        assert labels[len(p_ids) : n] == c_ids
        assert all(label == -100 for label in labels[n:])
        # the supervised part is exactly the assistant turn, closed by <|im_end|>
        assert tok.decode(c_ids) == completion + "<|im_end|>"


@pytest.mark.slow
def test_sft_teaches_the_target(
    tiny_model_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level("INFO", logger="mbt_online")
    # a run without a terminal (log file, CI), whether or not pytest was started with -s
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    rows = sft_dataset([(PROMPT, TARGET)] * 32)
    stale = tmp_path / SCRATCH / "checkpoint-3"  # what a run killed mid-stage leaves behind
    stale.mkdir(parents=True)
    before = _completion_logprob(tiny_model_dir, PROMPT, TARGET)
    top1_before, run_before = _target_reproduction(tiny_model_dir, PROMPT, TARGET)
    res = train_sft(tiny_model_dir, rows, tmp_path, _cfg(epochs=10.0), seed=0)
    after = _completion_logprob(res.model_dir, PROMPT, TARGET)
    top1_after, run_after = _target_reproduction(res.model_dir, PROMPT, TARGET)

    m = res.metrics
    assert m["train/sft_rows"] == 32 and m["train/sft_steps"] == 40  # 32 rows / 8 x 10 epochs
    assert m["train/sft_loss_last"] < m["train/sft_loss_first"] - 3.0
    assert after > before + 100.0, (before, after)  # nats over the 42 target tokens
    assert top1_before < 0.1 and top1_after > 0.6, (top1_before, top1_after)
    # the free greedy continuation now spells out a long stretch of the target (random init: ~1)
    assert run_before <= 2 and run_after >= 10, (run_before, run_after)
    assert {p.name for p in tmp_path.iterdir()} == {
        METRICS_FILE,
        STAGE_HISTORY,
        "model",
    }  # scratch cleared
    # no terminal, so no progress bar: the last step is logged instead
    assert any(r.getMessage().startswith("sft step 40/40 loss ") for r in caplog.records)
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == pytest.approx(m)


@pytest.mark.slow
def test_full_ft_changes_weights_and_repeats_with_the_seed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = _varied_rows()
    runs = {
        name: train_sft(tiny_model_dir, rows, tmp_path / name, _cfg(epochs=1.0), seed=seed)
        for name, seed in [("a", 0), ("b", 0), ("c", 1)]
    }
    start, a, b, c = (_weights(p) for p in [tiny_model_dir] + [r.model_dir for r in runs.values()])
    assert a.keys() == start.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights: resume-safe
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed really drives the shuffle
    changed = [k for k in a if not torch.equal(a[k], start[k])]
    assert len(changed) == len(a)  # full FT moves every tensor
    assert all(a[k].dtype == torch.float32 for k in a)


@pytest.mark.slow
def test_lora_writes_adapter_and_an_equivalent_merged_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    res = train_sft(tiny_model_dir, _varied_rows(), tmp_path, _cfg("lora"), seed=0)
    again = train_sft(tiny_model_dir, _varied_rows(), tmp_path / "again", _cfg("lora"), seed=0)
    adapter = load_file(str(res.adapter_dir / "adapter_model.safetensors"))
    adapter_again = load_file(str(again.adapter_dir / "adapter_model.safetensors"))
    assert all(torch.equal(adapter[k], adapter_again[k]) for k in adapter)  # seeded LoRA init
    shutil.rmtree(tmp_path / "again")
    assert res.adapter_dir == tmp_path / "adapter"
    assert {p.name for p in tmp_path.iterdir()} == {METRICS_FILE, STAGE_HISTORY, "adapter", "model"}
    adapter_cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 8 and adapter_cfg["lora_alpha"] == 16

    base, tok = _load(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(base, str(res.adapter_dir)).eval()
    merged, _ = _load(res.model_dir)
    p_ids, c_ids = _encode(tok, PROMPT, TARGET)
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        peft_logits = peft_model(ids).logits
        merged_logits = merged(ids).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(ids).logits
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-4, rtol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-2  # the adapter did learn something


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_dpo_raises_chosen_over_rejected_vs_reference(
    tiny_model_dir: Path, tmp_path: Path, method: str
) -> None:
    # rows come from disk in the loop; TRL's tokenization must not leave caches beside them
    dpo_dataset([(PROMPT, TARGET, REJECTED)] * 16).save_to_disk(tmp_path / "pairs")
    saved = {p.name for p in (tmp_path / "pairs").iterdir()}
    pairs = load_from_disk(str(tmp_path / "pairs"))
    res = train_dpo(tiny_model_dir, None, pairs, tmp_path / "out", _cfg(method), seed=0)
    assert {p.name for p in (tmp_path / "pairs").iterdir()} == saved

    def gap(model_dir: Path) -> float:
        chosen = _completion_logprob(model_dir, PROMPT, TARGET)
        return chosen - _completion_logprob(model_dir, PROMPT, REJECTED)

    ref_gap, new_gap = gap(tiny_model_dir), gap(res.model_dir)
    m = res.metrics
    # The reference is the starting model itself, so step one sees a zero log-ratio: loss = ln 2.
    assert m["train/dpo_loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    assert m["train/dpo_steps"] == 4  # 16 pairs / 8 x 2 epochs
    assert new_gap > ref_gap + 1.0, (ref_gap, new_gap)
    # TRL's implicit reward margin at the last step is beta x the gap's gain, measured before
    # that step's update; the final gain is at least that large.
    assert 0 < m["train/dpo_reward_margin_last"] <= 0.1 * (new_gap - ref_gap) + 1e-3
    assert m["train/dpo_loss_last"] < m["train/dpo_loss_first"]
    expected = {METRICS_FILE, STAGE_HISTORY, "model"} | ({"adapter"} if method == "lora" else set())
    assert {p.name for p in (tmp_path / "out").iterdir()} == expected


@pytest.mark.slow
def test_dpo_precomputed_reference_matches_the_rows_trained(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The precomputed reference log-probs are those of the rows as trained (after the
    end-of-turn cut): step one then sees a zero log-ratio, as with the live reference. TRL's own
    precompute ran before the cut and gave a first-step loss far above ln 2."""
    pairs = dpo_dataset([(PROMPT, TARGET, REJECTED)] * 16)
    cfg = _cfg()
    cfg.dpo.precompute_ref_log_probs = True
    res = train_dpo(tiny_model_dir, None, pairs, tmp_path / "out", cfg, seed=0)
    m = res.metrics
    assert m["train/dpo_loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    assert m["train/dpo_loss_last"] < m["train/dpo_loss_first"]
    gain = _completion_logprob(res.model_dir, PROMPT, TARGET) - _completion_logprob(
        res.model_dir, PROMPT, REJECTED
    )
    base = _completion_logprob(tiny_model_dir, PROMPT, TARGET) - _completion_logprob(
        tiny_model_dir, PROMPT, REJECTED
    )
    assert gain > base + 1.0, (base, gain)


@pytest.mark.slow
def test_dpo_sft_weight_adds_the_chosen_nll_and_keeps_the_chosen_likely(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pairs = dpo_dataset([(PROMPT, TARGET, REJECTED)] * 16)
    runs = {}
    for weight in (0.0, 1.0):
        cfg = _cfg()
        cfg.dpo.sft_weight = weight
        runs[weight] = train_dpo(tiny_model_dir, None, pairs, tmp_path / str(weight), cfg, seed=0)
    plain, rpo = runs[0.0].metrics, runs[1.0].metrics
    # step one: the DPO term is ln 2 either way; RPO adds the chosen trace's mean token NLL, which
    # for an untrained model is near ln(vocab)
    assert plain["train/dpo_loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    assert rpo["train/dpo_loss_first"] > math.log(2) + 2.0
    chosen = {w: _completion_logprob(r.model_dir, PROMPT, TARGET) for w, r in runs.items()}
    assert chosen[1.0] > chosen[0.0] + 5.0, chosen  # nats over the target


def test_dpo_turns_end_at_end_of_turn_and_a_capped_rejection_has_none(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Both rows reject the same text; only the flagged one was cut off by the length cap.
    pairs = dpo_dataset([(PROMPT, TARGET, REJECTED)] * 2, rejected_truncated=[True, False])
    trainer = dpo_trainer(tiny_model_dir, None, pairs, _cfg(), 0, tmp_path)
    eos = trainer.processing_class.eos_token_id
    cut, finished = trainer.train_dataset["rejected_ids"]
    assert eos not in cut and finished == [*cut, eos]  # nothing of the template after the end
    assert all(ids[-1] == eos for ids in trainer.train_dataset["chosen_ids"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_dpo_uses_an_explicit_reference(tiny_model_dir: Path, tmp_path: Path, method: str) -> None:
    # A different reference (here: an SFT'd model while training the initial one) shifts the
    # first step's loss to -log sigmoid(beta * ((pc - rc) - (pr - rr))), checked by hand.
    ref = train_sft(
        tiny_model_dir, sft_dataset([(PROMPT, TARGET)] * 8), tmp_path / "ref", _cfg(), 0
    )
    pairs = dpo_dataset([(PROMPT, TARGET, REJECTED)] * 8)
    res = train_dpo(tiny_model_dir, ref.model_dir, pairs, tmp_path / "dpo", _cfg(method), seed=0)
    pc, pr = (_completion_logprob(tiny_model_dir, PROMPT, t) for t in (TARGET, REJECTED))
    rc, rr = (_completion_logprob(ref.model_dir, PROMPT, t) for t in (TARGET, REJECTED))
    expected = -torch.nn.functional.logsigmoid(torch.tensor(0.1 * ((pc - rc) - (pr - rr))))
    assert abs(float(expected) - math.log(2)) > 0.05  # the check can tell the references apart
    assert res.metrics["train/dpo_loss_first"] == pytest.approx(float(expected), abs=1e-3)


@pytest.mark.slow
def test_bf16_training_keeps_the_folder_dtype(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bf16_dir = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16).save_pretrained(
        bf16_dir
    )
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(bf16_dir)
    rows = sft_dataset([(PROMPT, TARGET)] * 8)
    res = train_sft(bf16_dir, rows, tmp_path / "out", _cfg(), seed=0, bf16=True)
    weights = _weights(res.model_dir)
    assert all(w.dtype == torch.bfloat16 for w in weights.values())
    start = _weights(bf16_dir)
    assert any(not torch.equal(weights[k], start[k]) for k in weights)


def test_progress_log_speaks_at_most_every_interval_and_always_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace

    def feed(cb: ProgressLog, steps: int) -> list[str]:
        caplog.clear()
        with caplog.at_level("INFO", logger="mbt_online"):
            for step in range(1, steps + 1):
                state = SimpleNamespace(global_step=step, max_steps=steps)
                cb.on_log(None, state, None, logs={"loss": 1.0 / step})
                cb.on_log(None, state, None, logs={"train_runtime": 1.0})  # summary: ignored
        return [r.getMessage() for r in caplog.records]

    assert feed(ProgressLog("dpo", every_s=3600), 5) == [
        "dpo step 5/5 loss 0.2000 (0s, about 0s left)"
    ]
    every = feed(ProgressLog("sft", every_s=0), 4)
    assert [m.split(" loss")[0] for m in every] == [f"sft step {i}/4" for i in range(1, 5)]


# ---------------------------------------------------------------- batch sizes, logs, checkpoints


def test_global_batch_derives_grad_accum_from_the_world_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mbt_online.config import ConfigError, load_config
    from mbt_online.training.args import grad_accum, sft_args

    cfg = TrainConfig()
    cfg.sft.batch_size, cfg.sft.grad_accum, cfg.sft.global_batch_size = 4, 3, 32
    cfg.dpo.batch_size, cfg.dpo.grad_accum = 2, 5  # no global batch: grad_accum as set
    assert sft_args(cfg, 0, "x", False).gradient_accumulation_steps == 8  # one process
    for world, accum in ((1, 8), (2, 4), (8, 1)):
        monkeypatch.setenv("WORLD_SIZE", str(world))  # what accelerate launch / torchrun set
        assert (grad_accum(cfg, "sft"), grad_accum(cfg, "dpo")) == (accum, 5)
    monkeypatch.setenv("WORLD_SIZE", "3")  # 4 x 3 = 12 does not divide 32
    with pytest.raises(ConfigError, match=r"train\.sft\.global_batch_size \(32\).*4 x 3 = 12"):
        grad_accum(cfg, "sft")
    monkeypatch.delenv("WORLD_SIZE")
    # checked when the config loads, for the configured world
    base = ["train.dpo.batch_size=8", "train.dpo.global_batch_size=128"]
    load_config(None, base)  # 128 / 8 = 16 in one process
    world = ["runtime.num_processes=3", "runtime.accelerate_config=accelerate/ddp"]
    with pytest.raises(ConfigError, match=r"train\.dpo\.global_batch_size \(128\)"):
        load_config(None, [*base, *world])


def test_gpu_knobs_reach_the_trainer_arguments() -> None:
    from mbt_online.training.args import dpo_args, sft_args

    cfg = TrainConfig()
    args = sft_args(cfg, 0, "x", False)
    cuda = torch.cuda.is_available()
    assert args.gradient_checkpointing is cuda and args.save_strategy == "no"
    assert args.optim == "adamw_torch_fused"  # transformers' default with torch >= 2.8
    cfg.gradient_checkpointing, cfg.optim, cfg.save_steps = True, "adamw_torch", 5
    cfg.dpo.precompute_ref_log_probs = True
    args = dpo_args(cfg, 0, "x", False)
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {
        "use_reentrant": False
    }
    assert (args.optim, args.save_strategy, args.save_steps) == ("adamw_torch", "steps", 5)
    assert args.precompute_ref_log_probs is True


def test_attn_implementation_is_passed_to_the_model(tiny_model_dir: Path) -> None:
    from mbt_online.training.steps import load_policy

    assert (
        load_policy(tiny_model_dir, attn_implementation="eager")[0].config._attn_implementation
        == "eager"
    )
    assert (
        load_policy(tiny_model_dir, attn_implementation="sdpa")[0].config._attn_implementation
        == "sdpa"
    )


def test_last_checkpoint_skips_one_a_kill_cut_short(tmp_path: Path) -> None:
    from mbt_online.training.saving import TRAINER_STATE, last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step, complete in ((2, True), (4, True), (6, False), (10, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / TRAINER_STATE).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


@pytest.mark.slow
def test_train_job_writes_log_history_and_peak_memory(tiny_model_dir: Path, tmp_path: Path) -> None:
    from mbt_online.contracts import TrainJob
    from mbt_online.training.trainer import LOG_HISTORY, TrlTrainer

    cfg = _cfg(epochs=1.0)
    cfg.dpo.epochs = 1.0
    pairs = dpo_dataset([(PROMPT, TARGET, REJECTED)] * 16)
    job = TrainJob(str(tiny_model_dir), sft=_varied_rows(), pairs=pairs, out_dir=tmp_path, seed=0)
    trained = TrlTrainer(cfg).train(job)
    rows = [json.loads(x) for x in (tmp_path / LOG_HISTORY).read_text().splitlines()]
    steps = [(r["stage"], r["step"]) for r in rows if "loss" in r]
    assert steps == [("sft", 1), ("sft", 2), ("sft", 3), ("sft", 4), ("dpo", 1), ("dpo", 2)]
    assert all("learning_rate" in r for r in rows if "loss" in r)
    assert all("rewards/margins" in r for r in rows if r["stage"] == "dpo" and "loss" in r)
    sft_losses = [r["loss"] for r in rows if r["stage"] == "sft" and "loss" in r]
    assert sft_losses[0] == pytest.approx(trained.metrics["train/sft_loss_first"])
    assert [r["stage"] for r in rows if "train_runtime" in r] == ["sft", "dpo"]  # summaries
    peak = trained.metrics["train/peak_memory_gib"]
    assert 0.1 < peak < 64  # this process's RSS peak on a CPU: a real size, in GiB


def _worker(*args: str) -> subprocess.CompletedProcess:
    worker = Path(__file__).resolve().parents[1] / "support" / "_train_worker.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, str(worker), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_killed_stage_resumes_from_its_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SFT with save_steps=2 SIGKILLed as step 4 starts resumes from checkpoint-2 (not step 0)
    and ends with the weights and per-step losses of an uninterrupted run."""
    model = str(tiny_model_dir)
    killed = _worker("sft", model, str(tmp_path / "a"), "2", "3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    work = tmp_path / "a" / "sft" / CHECKPOINTS
    assert not (tmp_path / "a" / "sft" / "model").exists()
    assert last_checkpoint(work) == work / "checkpoint-2"
    resumed = _worker("sft", model, str(tmp_path / "a"), "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    cfg = train_config(batch=2, global_batch=None)  # the worker's, uninterrupted in-process
    cfg.sft.epochs, cfg.save_steps = 2.0, 2
    straight = train_sft(model, worker_rows(), tmp_path / "b" / "sft", cfg, seed=0)

    a = json.loads((tmp_path / "a" / "rank-0.json").read_text())
    assert a["first_step"] == 2  # the resumed process started after checkpoint-2, not at 0
    assert a["metrics"]["train/sft_steps"] == straight.metrics["train/sft_steps"] == 16
    losses = [
        [(h["step"], h["loss"]) for h in hist if "loss" in h]
        for hist in (a["history"], straight.history)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 16
    wa = _weights(tmp_path / "a" / "sft" / "model")
    wb = _weights(straight.model_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wb) and wa.keys() == wb.keys()
    assert not work.exists()  # checkpoints removed once the stage completed


@pytest.mark.slow
def test_a_stop_request_ends_sft_at_its_next_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """SIGUSR1 / SIGTERM during TRAIN: the stage stops once checkpoint-2 is complete (Preempted),
    keeps it, and the resumed stage continues from it."""
    from mbt_online import preemption

    cfg = train_config(batch=2, global_batch=None)
    cfg.save_steps = 2
    preemption.request("SIGUSR1")
    try:
        with pytest.raises(preemption.Preempted, match="sft step 3"):
            train_sft(tiny_model_dir, worker_rows(), tmp_path / "sft", cfg, seed=0)
    finally:
        preemption.reset()
    work = tmp_path / "sft" / CHECKPOINTS
    assert last_checkpoint(work) == work / "checkpoint-2"
    assert not (tmp_path / "sft" / "model").exists()
    res = train_sft(tiny_model_dir, worker_rows(), tmp_path / "sft", cfg, seed=0)
    assert res.metrics["train/sft_steps"] == 8 and not work.exists()


@pytest.mark.slow
def test_with_checkpoints_a_completed_stage_is_not_trained_again(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A TRAIN killed in DPO reruns SFT's call: with save_steps it returns SFT's finished result
    (same folder, metrics and history) instead of training it again."""
    cfg = train_config(batch=4, global_batch=None)
    cfg.save_steps = 100
    first = train_sft(tiny_model_dir, worker_rows(), tmp_path / "sft", cfg, seed=0)
    stamp = (first.model_dir / "model.safetensors").stat().st_mtime_ns
    again = train_sft(tiny_model_dir, worker_rows(), tmp_path / "sft", cfg, seed=0)
    assert (again.model_dir, again.metrics) == (first.model_dir, first.metrics)
    assert again.history == first.history and len(again.history) == 5  # 4 steps + summary
    assert (again.model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_cpu_merge_loads_the_base_without_zero3_partitioning(tiny_model_dir: Path) -> None:
    """Under ZeRO-3 (deepspeed is not installed here: its switch in transformers is set by hand)
    a from_pretrained on rank 0 alone would enter zero.Init, a collective; the merge turns it off
    for its load and restores it."""
    from transformers.integrations import deepspeed as ds

    from mbt_online.training.saving import _without_zero3_init

    class Zero3:  # what transformers asks of the HfDeepSpeedConfig it holds a weak reference to
        def is_zero3(self) -> bool:
            return True

    held = Zero3()
    ds.set_hf_deepspeed_config(held)
    try:
        assert ds.is_deepspeed_zero3_enabled()
        with _without_zero3_init():
            assert not ds.is_deepspeed_zero3_enabled()
        assert ds.is_deepspeed_zero3_enabled()
    finally:
        ds.unset_hf_deepspeed_config()
