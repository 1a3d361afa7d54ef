"""The embedded default's student: a tiny Llama trained from scratch on unregulated traces, cached.

With no hub and no GPU, the default run still needs a student that reads documents, follows hops,
and shows the failures MBT targets. It is trained here in a couple of CPU minutes on traces from
`reasoner.unregulated_trace` over training-side worlds, saved as an ordinary HF folder (so vLLM,
TRL and PEFT take it unchanged) and cached under a key of everything that shapes it, so a second
run starts at once and a changed config or code never reuses a stale student.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mbt_online import prompts
from mbt_online.config import Config
from mbt_online.models.cache import cache_root
from mbt_online.rundir.atomic import swap_dir
from mbt_online.scoring.metrics import PHASE_CUES
from mbt_online.sim import reasoner, tiny_model
from mbt_online.tasks import world
from mbt_online.tasks.base import Example
from mbt_online.teachers import structured

log = logging.getLogger(__name__)

# Bump when the build itself changes (architecture, reader circuit, training loop) without a change
# of the data or config it is keyed on: the cache key is what the student is trained on, not code.
RECIPE_VERSION = 1
_WORLD_SEED_BASE = 100_000  # bootstrap worlds never reuse the seeds of a run's own worlds
_TEACHER_SAMPLES = 400  # questions whose teacher traces feed the tokenizer's vocabulary


def student_key(cfg: Config, inputs: StudentInputs | None = None) -> str:
    """Hash of what the student is trained on (its traces and tokenizer corpus), the config fields
    that shape it and the recipe version: the cache folder's name. Editing a HotpotQA phrase changes
    no byte of the world's traces, so it no longer rebuilds the quickstart student."""
    inputs = inputs or student_inputs(cfg)
    data = hashlib.sha256()
    for row in inputs.rows:
        data.update(json.dumps([row["messages"], row["completion"]]).encode())
    for text in inputs.corpus:
        data.update(text.encode() + b"\0")
    payload = {
        "bootstrap": _shaping_fields(cfg),
        "max_model_len": cfg.student.max_model_len,
        "recipe": RECIPE_VERSION,
        "data": data.hexdigest(),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# fields added after students were cached: left out of the key at their default, so a config that
# does not use them keeps its cached student
_LATER_FIELDS = {"p_hop_slip": 0.0, "p_slip_repair": 0.0}


def _shaping_fields(cfg: Config) -> dict[str, Any]:
    dump = cfg.bootstrap.model_dump(mode="json")
    return {k: v for k, v in dump.items() if _LATER_FIELDS.get(k, object()) != v}


@dataclass(frozen=True)
class StudentInputs:
    """What the bootstrap student is built from: its questions, traces and tokenizer corpus."""

    examples: list[Example]
    rows: list[dict]
    corpus: list[str]


def student_inputs(cfg: Config) -> StudentInputs:
    examples = bootstrap_examples(cfg)
    rows = training_rows(cfg, examples)
    return StudentInputs(examples, rows, tokenizer_corpus(rows, examples))


def _distractors(cfg: Config) -> int:
    """The distractor count the run's training prompts use, so the student is trained on them."""
    split = cfg.data.train
    return cfg.world.distractors if split.distractors is None else split.distractors


def ensure_student(cfg: Config) -> Path:
    """The cached student folder for this config, built first if it is missing.

    Built into a temporary folder beside its final place and renamed when complete, so an
    interrupted build never leaves a folder that looks finished.
    """
    inputs = student_inputs(cfg)
    final = cache_root() / "students" / student_key(cfg, inputs)
    if (final / "bootstrap.json").is_file():
        log.info("bootstrap student: cached at %s", final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    try:
        stats = build_student(cfg, tmp, inputs)
        stats["seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "bootstrap.json").write_text(json.dumps(stats, indent=2))
        # another process that finished the same student first keeps theirs
        swap_dir(tmp, final, keep_theirs=lambda f: (f / "bootstrap.json").is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("bootstrap student: built in %.1f s at %s", stats["seconds"], final)
    return final


def bootstrap_examples(cfg: Config) -> list[Example]:
    """Questions from `bootstrap.worlds` fresh training-side worlds (never eval-side names)."""
    out: list[Example] = []
    b = cfg.bootstrap
    for i in range(b.worlds):
        seed = _WORLD_SEED_BASE + 1000 * b.seed + i
        w = world.generate_world(seed, cfg.world, "train")
        out += world.make_examples(
            w, b.questions_per_world, seed, cfg.world, distractors=_distractors(cfg)
        )
    return out


def training_rows(cfg: Config, examples: list[Example]) -> list[dict]:
    """One unregulated trace per question: {"messages", "completion", "kind"}."""
    rng = random.Random(f"traces:{cfg.bootstrap.seed}")
    rows = []
    for ex in examples:
        text, kind = reasoner.unregulated_trace(ex, rng, cfg.bootstrap)
        rows.append({"messages": prompts.student_messages(ex), "completion": text, "kind": kind})
    return rows


def tokenizer_corpus(rows: list[dict], examples: list[Example]) -> list[str]:
    """World text, prompts, traces and the teacher's and judges' wording.

    Every word the later rounds use must be a token the student can emit: the structured
    teacher's five-phase phrasing (MBT-S and MBT-R of these very drafts) is added here even though
    the bootstrap traces never use it.
    """
    texts = [m["content"] for row in rows for m in row["messages"]]
    texts += [row["completion"] for row in rows]
    texts += [prompts.METACOGNITIVE_SYSTEM, prompts.WORLD_INSTRUCTION]
    texts += [" ".join(cues) for cues in PHASE_CUES.values()]
    texts += _teacher_texts(examples[:_TEACHER_SAMPLES], rows[:_TEACHER_SAMPLES])
    return texts


def _teacher_texts(examples: list[Example], rows: list[dict]) -> list[str]:
    """Structured-teacher traces (both modes) in the SFT target format, as the rounds will see."""
    writer = structured.StructuredTeacher(seed=0)
    texts = []
    for i, (ex, row) in enumerate(zip(examples, rows, strict=True)):
        rng = random.Random(i)
        texts.append(prompts.format_target(writer.synthesize(ex, rng), ex.answer))
        texts.append(prompts.format_target(writer.rewrite(ex, row["completion"], rng), ex.answer))
    return texts


def build_student(cfg: Config, out_dir: Path, inputs: StudentInputs | None = None) -> dict:
    """Tokenizer, model and training into `out_dir`; returns the build's statistics."""
    b = cfg.bootstrap
    inputs = inputs or student_inputs(cfg)
    rows = inputs.rows
    tok = tiny_model.build_tokenizer(inputs.corpus, vocab_size=b.vocab_size)
    tiny_model.build_model(
        tok,
        out_dir,
        hidden_size=b.hidden_size,
        layers=b.layers,
        heads=b.heads,
        max_positions=cfg.student.max_model_len,
        seed=b.seed,
    )
    _set_rope_theta(out_dir, READER_ROPE_THETA)
    data = encode_rows(tok, rows, b.max_length, b.loop_max_length)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    install_reader(model, tok, seed=b.seed)
    losses = train_lm(model, data, cfg)
    model.save_pretrained(out_dir, safe_serialization=True)
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    return {
        "key": student_key(cfg, inputs),
        "config": cfg.bootstrap.model_dump(mode="json"),
        "traces": len(rows),
        "trace_kinds": kinds,
        "tokens": sum(len(d[0]) for d in data),
        "vocab": len(tok),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
    }


# --------------------------------------------------------------------------------------------------
# The reader circuit
#
# Looking a fact up in the documents is in-context copying, which transformers do with an induction
# circuit: layer-0 heads that attend to the previous tokens, and a layer-1 head that finds an
# earlier position preceded by the same two tokens as the current position and copies what stands
# there. Trained from random weights, a small model sits on a loss plateau for ~1,000 steps (~3.5M
# tokens here) before such a circuit forms: more than the whole CPU budget. So the bootstrap starts
# the student with the circuit set by hand (a structured initialization, no pretrained weights) and
# training turns it into fact lookup; every other weight starts random as usual.
#
# Residual stream layout (width w = (hidden - 2) // 3): dim 0 a constant channel (positional heads
# read it), then the token embedding, the previous token and the token before it, w dims each.

READER_ROPE_THETA = 1e6  # slow rotary pairs stay nearly static over the context: content matching


def _set_rope_theta(model_dir: Path, theta: float) -> None:
    """A larger RoPE base than `modeling`'s default, recorded in config.json for every loader."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    config.pop("rope_theta", None)
    path.write_text(json.dumps(config, indent=2))


def install_reader(
    model: Any,
    tokenizer: Any = None,
    seed: int = 0,
    *,
    const: float = 1.0,
    token_std: float = 0.3,
    sharp_pos: float = 6.5,
    sharp_match: float = 3.0,
    copy_gain: float = 4.0,
) -> None:
    """Layer 0 heads 0/1 attend to the token 1/2 back; layer 1 head 0 is a 2-gram induction head.

    With a tokenizer, a word without its leading space ("Rex", as after <answer>) starts as its
    spaced twin (" Rex") plus one shared offset, so copying a name into the answer tags is a copy
    plus one learned direction rather than ~100 separate associations.
    """
    cfg = model.config
    d, hidden = cfg.head_dim, cfg.hidden_size
    w = (hidden - 2) // 3
    if cfg.num_hidden_layers < 2 or cfg.num_attention_heads < 2 or w > d or d < 32:
        raise ValueError("the reader circuit needs >= 2 layers, >= 2 heads and head_dim >= w")
    gen = torch.Generator().manual_seed(seed)
    tok, prev1, prev2 = (torch.arange(1 + i * w, 1 + (i + 1) * w) for i in range(3))
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.zero_()
        emb[:, 0] = const
        emb[:, tok] = torch.randn(emb.shape[0], w, generator=gen) * token_std
        if tokenizer is not None:
            _pair_unspaced(emb, tokenizer, tok, token_std, gen)
        rms = math.sqrt((const**2 + w * token_std**2) / hidden)
        x_const, x_tok = const / rms, token_std / rms  # their sizes after RMSNorm
        attn0, attn1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn
        for head, (offset, dest) in enumerate(((1, prev1), (2, prev2))):
            _positional_head(attn0, head, d, offset, x_const, sharp_pos, tok, dest)
        _induction_head(attn1, d, x_tok, sharp_match, copy_gain, tok, prev1, prev2, gen)
        for layer in model.model.layers:  # quiet MLPs at the start: they would blur the subspaces
            layer.mlp.down_proj.weight.mul_(0.1)


def _pair_unspaced(emb, tokenizer, tok_dims, std, gen) -> None:
    vocab = tokenizer.get_vocab()
    offset = torch.randn(len(tok_dims), generator=gen) * std * 0.5
    for piece, idx in vocab.items():
        twin = vocab.get("\u0120" + piece)  # byte-level BPE writes a leading space as U+0120
        if piece.isalpha() and twin is not None:
            emb[idx, tok_dims] = emb[twin, tok_dims] + offset


def _head_rows(head: int, d: int) -> slice:
    return slice(head * d, (head + 1) * d)


def _clear_head(attn: Any, head: int, d: int) -> None:
    rows = _head_rows(head, d)
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        proj.weight[rows, :] = 0
    attn.o_proj.weight[:, rows] = 0


def _positional_head(attn, head, d, offset, x_const, sharp, src, dest) -> None:
    """Query and key come from the constant channel, so the score depends on position only:
    with RoPE, sum_m cos(theta_m * (i - j - offset)) over the fast pairs peaks at j = i - offset.
    The value copies the token embedding there into `dest`."""
    _clear_head(attn, head, d)
    base, half, n = head * d, d // 2, len(src)
    for m in range(4):
        theta = READER_ROPE_THETA ** (-2 * m / d)
        attn.k_proj.weight[base + m, 0] = sharp / x_const
        attn.q_proj.weight[base + m, 0] = sharp * math.cos(offset * theta) / x_const
        attn.q_proj.weight[base + m + half, 0] = -sharp * math.sin(offset * theta) / x_const
    attn.v_proj.weight[base + torch.arange(n), src] = 1.0
    attn.o_proj.weight[dest, base + torch.arange(n)] = 1.0


def _induction_head(attn, d, x_tok, sharp, gain, tok, prev1, prev2, gen) -> None:
    """Query (current, previous token) against key (previous, second previous token), through
    random projections onto the slow rotary pairs; the value adds the matched token itself."""
    _clear_head(attn, 0, d)
    half, n = d // 2, len(tok)
    static = torch.cat([torch.arange(half // 2, half), torch.arange(half + half // 2, d)])
    for part, (q_src, k_src) in enumerate(((tok, prev1), (prev1, prev2))):
        rows = static[part::2]
        proj = torch.linalg.qr(torch.randn(n, len(rows), generator=gen))[0].T * sharp / x_tok
        attn.q_proj.weight[rows[:, None], q_src[None, :]] = proj
        attn.k_proj.weight[rows[:, None], k_src[None, :]] = proj
    attn.v_proj.weight[torch.arange(n), tok] = 1.0
    attn.o_proj.weight[tok, torch.arange(n)] = gain


def encode_rows(
    tok: Any, rows: list[dict], max_length: int, loop_max_length: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per row: the chat-rendered prompt (labels -100) then the completion.

    Finished traces end with the end-of-turn token, loops do not: a loop cut at its length teaches
    the student to keep going until the generation cap. Loops are cut at `loop_max_length` (when
    shorter than `max_length`): a few turns of the cycle teach it as well as many, and loops were
    over half of the bootstrap's tokens. Tokenized in two batch calls (one text per call cost
    ~1 ms each, 5-7 s of the bootstrap's 4,800 rows).
    """
    texts = [
        tok.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=True)
        for row in rows
    ]
    ends = ["" if row["kind"] == "loop" else tok.eos_token for row in rows]
    prompts = tok(texts, add_special_tokens=False)["input_ids"]
    completions = tok(
        [row["completion"] + end for row, end in zip(rows, ends, strict=True)],
        add_special_tokens=False,
    )["input_ids"]
    loop_cut = min(max_length, loop_max_length or max_length)
    cuts = [loop_cut if row["kind"] == "loop" else max_length for row in rows]
    return [
        ((prompt + comp)[:cut], ([-100] * len(prompt) + comp)[:cut])
        for prompt, comp, cut in zip(prompts, completions, cuts, strict=True)
    ]


def _batches(data: list, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar length (less padding), in random order."""
    order = list(range(len(data)))
    rng.shuffle(order)
    chunk = batch_size * 32
    batches = []
    for i in range(0, len(order), chunk):
        group = sorted(order[i : i + chunk], key=lambda j: len(data[j][0]))
        batches += [group[k : k + batch_size] for k in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(data: list, idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(data[j][0]) for j in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, j in enumerate(idx):
        x, y = data[j]
        ids[r, : len(x)] = torch.tensor(x)
        labels[r, : len(y)] = torch.tensor(y)
        mask[r, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def completion_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token loss on labelled positions, with logits computed only there.

    The prompt is about two thirds of every row; skipping its vocabulary projection saves a
    sixth of the step. Same value as the model's own loss.
    """
    hidden = model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def train_lm(model: Any, data: list, cfg: Config) -> list[float]:
    """A plain AdamW loop with warmup and cosine decay: fastest on two cores, deterministic."""
    b = cfg.bootstrap
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(b.seed)
    rng = random.Random(f"batches:{b.seed}")
    epochs = math.ceil(b.epochs)
    plan = [batch for _ in range(epochs) for batch in _batches(data, b.batch_size, rng)]
    plan = plan[: max(1, round(len(plan) * b.epochs / epochs))]
    opt = torch.optim.AdamW(
        model.parameters(), lr=b.learning_rate, betas=(0.9, 0.98), weight_decay=0.01
    )
    warmup = max(1, len(plan) // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, len(plan) - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    pad = model.config.pad_token_id
    losses: list[float] = []
    model.train()
    bar = tqdm(plan, desc="bootstrap student", unit="batch")
    for idx in bar:
        loss = completion_loss(model, _collate(data, idx, pad))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses
