"""The embedded student: cache location and key, reuse, determinism, the reader circuit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from mbt_online.config import Config, validate
from mbt_online.sim import bootstrap
from mbt_online.sim.bootstrap import (
    encode_rows,
    ensure_student,
    install_reader,
    student_key,
)

# Small enough to build in a few seconds, big enough to exercise every step.
TINY = {
    "world": {"entities_per_kind": 8},
    "student": {"max_model_len": 512},
    "bootstrap": {
        "worlds": 1,
        "questions_per_world": 48,
        "vocab_size": 500,
        "hidden_size": 64,
        "layers": 2,
        "heads": 2,
        "max_length": 320,
        "batch_size": 4,
    },
}


def tiny(**changes) -> Config:
    raw = json.loads(json.dumps(TINY))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    return validate(raw)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MBT_ONLINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_key_follows_what_shapes_the_student():
    base = student_key(tiny())
    assert student_key(tiny()) == base
    for change in (
        {"bootstrap__p_loop": 0.1},
        {"bootstrap__hidden_size": 128},
        {"bootstrap__seed": 1},
        {"world__entities_per_kind": 9},
        {"world__max_hops": 3},
        {"student__max_model_len": 1024},
    ):
        assert student_key(tiny(**change)) != base, change
    for change in ({"loop__rounds": 7}, {"world__questions": 5}, {"train__threads": 1}):
        assert student_key(tiny(**change)) == base, change
    raw = json.loads(json.dumps(TINY)) | {"data": {"train": {"distractors": 1}}}
    assert student_key(validate(raw)) != base  # the training prompts' distractor count


def test_cache_key_is_what_the_student_is_trained_on_not_source_files():
    """The key reads the traces and tokenizer corpus: a changed word in either is a new student,
    while editing code that writes neither (a HotpotQA phrase) cannot shift the quickstart."""
    cfg = tiny()
    inputs = bootstrap.student_inputs(cfg)
    base = student_key(cfg, inputs)
    assert student_key(cfg) == base  # computed from the same inputs when none are passed
    rows = [dict(r) for r in inputs.rows]
    rows[0]["completion"] += " again"
    assert student_key(cfg, bootstrap.StudentInputs(inputs.examples, rows, inputs.corpus)) != base
    corpus = [*inputs.corpus[:-1], inputs.corpus[-1] + "!"]
    assert student_key(cfg, bootstrap.StudentInputs(inputs.examples, inputs.rows, corpus)) != base


def test_ensure_student_builds_once_then_reuses(cache, monkeypatch):
    cfg = tiny()
    path = ensure_student(cfg)
    assert path.parent == cache / "students" and path.name == student_key(cfg)
    stats = json.loads((path / "bootstrap.json").read_text())
    assert stats["traces"] == 48 and stats["key"] == path.name
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]

    def must_not_build(*args, **kwargs):
        raise AssertionError("the cached student was rebuilt")

    monkeypatch.setattr(bootstrap, "build_student", must_not_build)
    assert ensure_student(cfg) == path
    with pytest.raises(AssertionError, match="rebuilt"):
        ensure_student(tiny(bootstrap__seed=3))  # another key: a new build


def test_failed_build_leaves_no_cache_entry(cache, monkeypatch):
    def broken(cfg, out, inputs=None):
        out.mkdir(parents=True)
        (out / "half-written").write_text("x")
        raise RuntimeError("killed")

    monkeypatch.setattr(bootstrap, "build_student", broken)
    with pytest.raises(RuntimeError, match="killed"):
        ensure_student(tiny())
    assert list((cache / "students").iterdir()) == []


def test_same_seed_gives_the_same_student(tmp_path):
    from safetensors.torch import load_file

    cfg = tiny()
    a = bootstrap.build_student(cfg, tmp_path / "a")
    b = bootstrap.build_student(cfg, tmp_path / "b")
    assert a["final_loss"] == b["final_loss"]
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_built_student_loads_with_transformers_and_answers_in_format(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mbt_online.prompts import student_messages
    from mbt_online.tasks.world import world_split

    # One epoch of 12 steps learned the format under some thread counts only (CI saw 'ssss'). With
    # the world's short instruction four epochs put P(<think> first) at 0.38-0.93 over 8 eval
    # questions (the first one's 0.38 lost to "\n\n"), six at 0.66-0.96, with 1 and 2 threads alike.
    cfg = tiny(bootstrap__epochs=6.0)
    bootstrap.build_student(cfg, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == bootstrap.READER_ROPE_THETA
    tok = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ex = world_split(cfg.data.eval.model_copy(update={"limit": 1}), cfg.world, "eval")[0]
    ids = tok.apply_chat_template(
        student_messages(ex), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert tok.decode(out[0, ids.shape[1] :]).startswith("<think>")


def test_encode_rows_masks_the_prompt_and_ends_finished_traces_only(tmp_path):
    from mbt_online.sim import tiny_model

    cfg = tiny()
    examples = bootstrap.bootstrap_examples(cfg)
    rows = bootstrap.training_rows(cfg, examples)
    tok = tiny_model.build_tokenizer(bootstrap.tokenizer_corpus(rows, examples), vocab_size=500)
    encoded = encode_rows(tok, rows, 10_000)
    assert len(encoded) == len(rows) and {row["kind"] for row in rows} >= {"loop", "clean"}
    for row, (ids, labels) in zip(rows, encoded, strict=True):
        n_prompt = labels.index(next(x for x in labels if x != -100))
        text = tok.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=True)
        assert ids[:n_prompt] == tok(text, add_special_tokens=False)["input_ids"]
        assert ids[n_prompt] == tok.convert_tokens_to_ids("<think>")
        assert labels[n_prompt:] == ids[n_prompt:]
        assert (ids[-1] == tok.eos_token_id) == (row["kind"] != "loop")
    for ids, labels in encode_rows(tok, rows, 50):
        assert len(ids) == len(labels) == 50
    # loops alone are cut at loop_max_length; finished traces keep their end-of-turn token
    full = encode_rows(tok, rows, 10_000)
    cut = encode_rows(tok, rows, 10_000, loop_max_length=150)
    for row, (ids, labels), (ids_full, _) in zip(rows, cut, full, strict=True):
        if row["kind"] == "loop":
            assert len(ids) == len(labels) == 150 and ids == ids_full[:150]
        else:
            assert ids == ids_full and ids[-1] == tok.eos_token_id


def _circuit_model(hidden=128, layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=400,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=hidden // 2,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": bootstrap.READER_ROPE_THETA},
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def test_reader_circuit_copies_a_repeated_sequence_before_any_training():
    model = _circuit_model()
    rng = random.Random(0)
    first = [rng.randrange(300) for _ in range(40)]
    seq = first + [rng.randrange(300) for _ in range(20)] + first
    ids = torch.tensor([seq])
    with torch.no_grad():
        before = model(input_ids=ids).logits[0].argmax(-1)
        install_reader(model)
        out = model(input_ids=ids, output_attentions=True)
    start = len(seq) - len(first)
    target = ids[0, start + 2 :]

    def copied(pred):
        return (pred[start + 1 : -1] == target).float().mean().item()

    assert copied(before) < 0.1
    assert copied(out.logits[0].argmax(-1)) > 0.9
    attn0 = out.attentions[0][0]  # layer 0 heads attend 1 and 2 tokens back
    assert [attn0[0, i].argmax().item() for i in (10, 50, 90)] == [9, 49, 89]
    assert [attn0[1, i].argmax().item() for i in (10, 50, 90)] == [8, 48, 88]


def test_reader_pairs_unspaced_words_with_their_spaced_twins():
    from mbt_online.sim import tiny_model

    texts = ["Rex Stone met Ada Vale, and Ada met Rex.", "<answer>Rex Stone</answer>", "Ada Vale"]
    tok = tiny_model.build_tokenizer(texts * 20, 300)
    model = _circuit_model()
    model.resize_token_embeddings(len(tok))
    install_reader(model, tok)
    emb = model.get_input_embeddings().weight
    rex, spaced_rex = tok.convert_tokens_to_ids(["Rex", "\u0120Rex"])
    ada, spaced_ada = tok.convert_tokens_to_ids(["Ada", "\u0120Ada"])
    assert None not in (rex, spaced_rex, ada, spaced_ada)
    diff_rex, diff_ada = emb[rex] - emb[spaced_rex], emb[ada] - emb[spaced_ada]
    assert torch.allclose(diff_rex, diff_ada) and diff_rex.norm() > 0


def test_reader_refuses_models_it_cannot_wire():
    with pytest.raises(ValueError, match="reader circuit"):
        install_reader(_circuit_model(layers=1))


@pytest.mark.slow
def test_vllm_serves_the_student_like_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mbt_online.generation.vllm_engine import Engine
    from mbt_online.prompts import student_messages
    from mbt_online.tasks.world import world_split

    # trained past the near-ties of a 12-step student, where fp32 rounding differences between
    # the two implementations pick different tokens (CI saw "Ostra Ostra" then byte soup)
    cfg = tiny(bootstrap__epochs=4.0)
    bootstrap.build_student(cfg, tmp_path)
    exs = world_split(cfg.data.eval.model_copy(update={"limit": 2}), cfg.world, "eval")
    chats = [student_messages(ex) for ex in exs]
    engine = Engine(str(tmp_path), max_model_len=512)
    try:
        got = engine.generate(
            chats, n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=16, seed=0, progress=False
        )
    finally:
        engine.close()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for chat, (completion,) in zip(chats, got, strict=True):
        ids = tok.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=16, do_sample=False)
        assert completion.text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_completion_loss_equals_the_models_own_loss():
    from mbt_online.sim.bootstrap import _collate, completion_loss

    model = _circuit_model()
    data = [([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9]), ([5, 6, 7], [-100, 6, 7])]
    batch = _collate(data, [0, 1], pad_id=0)
    with torch.no_grad():
        assert torch.allclose(completion_loss(model, batch), model(**batch).loss, atol=1e-6)
