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
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mbt_online import modeling, prompts, reasoner, teacher, world
from mbt_online.config import Config
from mbt_online.data import Example
from mbt_online.metrics import PHASE_CUES

log = logging.getLogger(__name__)

# Sources whose change must rebuild the student (its data, tokenizer, architecture or training).
_KEY_SOURCES = (world, reasoner, modeling, prompts, teacher)
_WORLD_SEED_BASE = 100_000  # bootstrap worlds never reuse the seeds of a run's own worlds
_TEACHER_SAMPLES = 400  # questions whose teacher traces feed the tokenizer's vocabulary


def cache_root() -> Path:
    """`$MBT_ONLINE_CACHE`, else `$XDG_CACHE_HOME/mbt-online`, else `~/.cache/mbt-online`."""
    if os.environ.get("MBT_ONLINE_CACHE"):
        return Path(os.environ["MBT_ONLINE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "mbt-online"


def student_key(cfg: Config) -> str:
    """Hash of the config fields and code that shape the student; the cache folder's name."""
    sources = {m.__name__: hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest() for m in
               (*_KEY_SOURCES, _this_module())}
    payload = {
        "bootstrap": cfg.bootstrap.model_dump(mode="json"),
        "world": cfg.world.model_dump(mode="json", exclude={"questions"}),
        "distractors": _distractors(cfg),
        "max_model_len": cfg.student.max_model_len,
        "sources": sources,
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _this_module() -> Any:
    import sys

    return sys.modules[__name__]


def _distractors(cfg: Config) -> int:
    """The distractor count the run's training prompts use, so the student is trained on them."""
    split = cfg.data.train
    return cfg.world.distractors if split.distractors is None else split.distractors


def ensure_student(cfg: Config) -> Path:
    """The cached student folder for this config, built first if it is missing.

    Built into a temporary folder beside its final place and renamed when complete, so an
    interrupted build never leaves a folder that looks finished.
    """
    final = cache_root() / "students" / student_key(cfg)
    if (final / "bootstrap.json").is_file():
        log.info("bootstrap student: cached at %s", final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    try:
        stats = build_student(cfg, tmp)
        stats["seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "bootstrap.json").write_text(json.dumps(stats, indent=2))
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same student first: keep theirs
            if not (final / "bootstrap.json").is_file():
                raise
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
    texts += [prompts.METACOGNITIVE_SYSTEM, prompts.STUDENT_INSTRUCTION]
    texts += [" ".join(cues) for cues in PHASE_CUES.values()]
    texts += _teacher_texts(examples[:_TEACHER_SAMPLES], rows[:_TEACHER_SAMPLES])
    return texts


def _teacher_texts(examples: list[Example], rows: list[dict]) -> list[str]:
    """Structured-teacher traces (both modes) in the SFT target format, as the rounds will see."""
    writer = teacher.StructuredTeacher(seed=0)
    texts = []
    for i, (ex, row) in enumerate(zip(examples, rows, strict=True)):
        rng = random.Random(i)
        texts.append(prompts.format_target(writer.synthesize(ex, rng), ex.answer))
        texts.append(prompts.format_target(writer.rewrite(ex, row["completion"], rng), ex.answer))
    return texts


def build_student(cfg: Config, out_dir: Path) -> dict:
    """Tokenizer, model and training into `out_dir`; returns the build's statistics."""
    b = cfg.bootstrap
    examples = bootstrap_examples(cfg)
    rows = training_rows(cfg, examples)
    tok = modeling.build_tokenizer(tokenizer_corpus(rows, examples), vocab_size=b.vocab_size)
    modeling.build_model(
        tok,
        out_dir,
        hidden_size=b.hidden_size,
        layers=b.layers,
        heads=b.heads,
        max_positions=cfg.student.max_model_len,
        seed=b.seed,
    )
    _set_rope_theta(out_dir, READER_ROPE_THETA)
    data = [encode_row(tok, row, b.max_length) for row in rows]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    install_reader(model, seed=b.seed)
    losses = train_lm(model, data, cfg)
    model.save_pretrained(out_dir, safe_serialization=True)
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    return {
        "key": student_key(cfg),
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
# circuit: a layer-0 head that attends to the previous token, and a layer-1 head that finds an
# earlier position whose previous token is the current token and copies what stands there. Trained
# from random weights, a small model sits on a loss plateau for ~1,000 steps (~3.5M tokens here)
# before that circuit forms: more than the whole CPU budget. So the bootstrap starts the student
# with the circuit set by hand (a structured initialization, no pretrained weights) and training
# refines it into fact lookup; every other weight starts random as usual.
#
# Layout of the residual stream (head size d): dim 0 a constant channel (positional heads read
# it), dims 1..d-1 the token embedding, dims d..2d-2 the previous token (written by layer 0).

READER_ROPE_THETA = 1e6  # slow rotary pairs stay nearly static over the context: content matching


def _set_rope_theta(model_dir: Path, theta: float) -> None:
    """A larger RoPE base than `modeling`'s default, recorded in config.json for every loader."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    config.pop("rope_theta", None)
    path.write_text(json.dumps(config, indent=2))


def install_reader(model: Any, seed: int = 0, *, const: float = 1.0, token_std: float = 0.3,
                   sharp_pos: float = 6.5, sharp_match: float = 3.0, copy_gain: float = 4.0) -> None:
    """Set layer 0 head 0 to a previous-token head and layer 1 head 0 to an induction head.

    Needs >= 2 layers, hidden_size >= 2 * head_dim and a head_dim of at least 32.
    """
    cfg = model.config
    d, hidden = cfg.head_dim, cfg.hidden_size
    if cfg.num_hidden_layers < 2 or hidden < 2 * d or d < 32:
        raise ValueError("the reader circuit needs >= 2 layers and hidden_size >= 2 * head_dim")
    gen = torch.Generator().manual_seed(seed)
    tok_dims = torch.arange(1, d)
    prev_dims = torch.arange(d, 2 * d - 1)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.zero_()
        emb[:, 0] = const
        emb[:, 1:d] = torch.randn(emb.shape[0], d - 1, generator=gen) * token_std
        rms = math.sqrt((const**2 + (d - 1) * token_std**2) / hidden)
        x_const, x_tok = const / rms, token_std / rms  # their sizes after RMSNorm
        layers = model.model.layers
        _previous_token_head(layers[0].self_attn, d, x_const, sharp_pos, tok_dims, prev_dims)
        _induction_head(layers[1].self_attn, d, x_tok, sharp_match, copy_gain, tok_dims,
                        prev_dims, gen)
        for layer in layers:  # quiet MLPs at the start, so they do not blur the subspaces
            layer.mlp.down_proj.weight.mul_(0.1)


def _clear_head(attn: Any, d: int) -> None:
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        proj.weight[:d, :] = 0
    attn.o_proj.weight[:, :d] = 0


def _previous_token_head(attn, d, x_const, sharp, tok_dims, prev_dims) -> None:
    """Query and key come from the constant channel, so the score depends on position only:
    with RoPE, sum_m cos(theta_m * (i - j - 1)) over the fast pairs peaks at j = i - 1."""
    _clear_head(attn, d)
    half = d // 2
    for m in range(4):
        theta = READER_ROPE_THETA ** (-2 * m / d)
        attn.k_proj.weight[m, 0] = sharp / x_const
        attn.q_proj.weight[m, 0] = sharp * math.cos(theta) / x_const
        attn.q_proj.weight[m + half, 0] = -sharp * math.sin(theta) / x_const
    attn.v_proj.weight[torch.arange(d - 1), tok_dims] = 1.0
    attn.o_proj.weight[prev_dims, torch.arange(d - 1)] = 1.0


def _induction_head(attn, d, x_tok, sharp, gain, tok_dims, prev_dims, gen) -> None:
    """Query: the current token; key: the previous token (from layer 0), both through the same
    random projection onto the slow rotary pairs; value: the token itself, added to the stream."""
    _clear_head(attn, d)
    half = d // 2
    static = torch.cat([torch.arange(half // 2, half), torch.arange(half + half // 2, d)])
    proj = torch.linalg.qr(torch.randn(d - 1, len(static), generator=gen))[0].T * sharp / x_tok
    attn.q_proj.weight[static[:, None], tok_dims[None, :]] = proj
    attn.k_proj.weight[static[:, None], prev_dims[None, :]] = proj
    attn.v_proj.weight[torch.arange(d - 1), tok_dims] = 1.0
    attn.o_proj.weight[tok_dims, torch.arange(d - 1)] = gain


def encode_row(tok: Any, row: dict, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the chat-rendered prompt (labels -100) then the completion.

    Finished traces end with the end-of-turn token, loops do not: a loop cut at `max_length`
    teaches the student to keep going until the generation cap.
    """
    text = tok.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=True)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    completion = row["completion"] + ("" if row["kind"] == "loop" else tok.eos_token)
    comp = tok(completion, add_special_tokens=False)["input_ids"]
    ids = (prompt + comp)[:max_length]
    labels = ([-100] * len(prompt) + comp)[:max_length]
    return ids, labels


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
    opt = torch.optim.AdamW(model.parameters(), lr=b.learning_rate, betas=(0.9, 0.98),
                            weight_decay=0.01)
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
        loss = model(**_collate(data, idx, pad)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses
