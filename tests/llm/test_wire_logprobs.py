"""GRPO's samples over the wire: the sampled token ids and log-probabilities `vllm serve` returns
(`return_token_ids`, `logprobs`), parsed from bodies recorded from a real server
(tests/data/served), and every way a body can contradict itself refused naming choice and token."""

from __future__ import annotations

import copy
import json
import math

import pytest
from fake_llm_server import FakeLLMServer
from paths import SERVED_REPLIES

from mbt_online.llm.client import LLMClient
from mbt_online.llm.wire import (
    MISSING_LOGPROB,
    SAMPLED_TOKENS_FIELDS,
    ChatFailure,
    ChatRequest,
    MalformedResponse,
    Sampled,
    choice_logprobs,
    parse_chat_response,
    sampled_tokens,
)

CHAT = [{"role": "user", "content": "Which city is the capital of France?"}]


def recorded(name: str) -> dict:
    return json.loads((SERVED_REPLIES / f"vllm-0.32.0-chat-{name}.json").read_text())


def test_a_recorded_reply_gives_each_choices_ids_and_the_log_prob_of_each_id():
    body = recorded("sampled")
    prompt, samples = sampled_tokens(body)
    assert prompt == body["prompt_token_ids"] and len(prompt) == body["usage"]["prompt_tokens"]
    assert samples == [
        Sampled(
            [493, 667, 425, 1463, 1868, 968],
            [e["logprob"] for e in body["choices"][0]["logprobs"]["content"]],
        ),
        Sampled(
            [516, 1030, 1470, 1947, 819, 114],
            [e["logprob"] for e in body["choices"][1]["logprobs"]["content"]],
        ),
    ]
    assert samples[0].logprobs[0] == pytest.approx(-7.711889266967773, abs=0)
    for s in samples:
        assert all(math.isfinite(v) and v <= 0 for v in s.logprobs)
    texts, reasons, usage = parse_chat_response(body)
    assert reasons == ["length", "length"] and usage["completion_tokens"] == 12
    assert texts[0] == " te had Ch 25 fourthollow"


def test_choices_come_in_index_order_and_a_stop_keeps_the_end_of_turn_token():
    body = recorded("stopped")
    body["choices"].reverse()  # the index, not the position, orders them
    _, samples = sampled_tokens(body)
    stop = samples[1]
    assert stop.token_ids == [1947, 204, 1753, 2]  # the end-of-turn token (2) kept, as vLLM drew it
    assert stop.logprobs == pytest.approx([-8.00794, -7.76482, -7.61784, -1.81192], abs=1e-4)
    assert len(samples[0].token_ids) == len(samples[0].logprobs) == 8


def test_a_reply_without_them_says_so_rather_than_guessing():
    body = recorded("no_logprobs")  # log-probs not asked: `logprobs` is null
    prompt, samples = sampled_tokens(body)
    assert prompt == body["prompt_token_ids"]
    assert [s.logprobs for s in samples] == [None, None]
    assert [s.token_ids for s in samples] == [[493, 667, 425, 1463], [516, 1030, 1470, 1947]]
    del body["prompt_token_ids"], body["choices"][1]["token_ids"]
    assert sampled_tokens(body) == (None, [])  # one choice without ids: no ids for any
    assert sampled_tokens({"choices": []}) == (None, []) and sampled_tokens([]) == (None, [])
    assert sampled_tokens({"choices": [{"token_ids": [1, True]}]}) == (None, [])


def _broken(edit) -> dict:
    body = copy.deepcopy(recorded("sampled"))
    edit(body["choices"][1]["logprobs"]["content"])
    return body


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop(), r"choice 1: 5 log-prob entries for 6 token ids"),
        (lambda c: c.insert(0, c[1]), r"choice 1: 7 log-prob entries"),
        (lambda c: c.reverse(), r"choice 1 token 0 \(id 516\): .* for token_id:114"),
        (lambda c: c[2].update(logprob=MISSING_LOGPROB), r"token 2 \(id 1470\).*-9999.0"),
        (lambda c: c[2].pop("logprob"), r"token 2 \(id 1470\): no log-prob \(None\)"),
        (lambda c: c[3].update(logprob="-1.0"), r"token 3 \(id 1947\): no log-prob"),
        (lambda c: c[3].update(logprob=float("nan")), r"token 3 .* not finite"),
        (lambda c: c[4].update(logprob=3.2), r"token 4 .*> 0, not a log-probability"),
        (lambda c: c.__setitem__(5, None), r"token 5 .* entry is NoneType"),
    ],
)
def test_log_probs_that_do_not_match_the_ids_are_refused_naming_the_token(edit, message):
    with pytest.raises(MalformedResponse, match=message):
        sampled_tokens(_broken(edit))


def test_float_rounding_above_zero_reads_as_zero_and_plain_token_strings_are_not_checked():
    choice = {"logprobs": {"content": [{"token": " the", "logprob": 3e-7}, {"logprob": -0.5}]}}
    assert choice_logprobs(choice, [11, 12]) == [0.0, -0.5]
    assert choice_logprobs({"logprobs": {"content": None}}, [1]) is None
    assert choice_logprobs({}, [1]) is None


def _replying(body: dict) -> FakeLLMServer:
    server = FakeLLMServer()
    server.completion = lambda payload: copy.deepcopy(body)  # type: ignore[method-assign]
    return server.start()


def test_the_client_returns_them_and_sends_what_vllm_needs_to_report_them():
    body = recorded("stopped")
    with _replying(body) as fake, LLMClient(fake.base_url, model="s", api_key_env="") as client:
        req = ChatRequest(CHAT, 2, 1.0, 8, 5, 1.0, dict(SAMPLED_TOKENS_FIELDS))
        result = client.complete(req)
        assert fake.payloads[0]["logprobs"] is True and fake.payloads[0]["top_logprobs"] == 0
        assert fake.payloads[0]["return_token_ids"] is True
        assert fake.payloads[0]["return_tokens_as_token_ids"] is True
    assert result.prompt_ids == body["prompt_token_ids"]
    assert [s.token_ids for s in result.samples] == [c["token_ids"] for c in body["choices"]]
    assert result.completion_tokens == [8, 4] and result.finish_reasons == ["length", "stop"]


def test_the_client_takes_a_contradicting_body_as_malformed_and_retries_it():
    bad = _broken(lambda c: c.reverse())
    with _replying(bad) as fake:
        client = LLMClient(fake.base_url, model="s", api_key_env="", max_retries=1, backoff_s=0)
        out = client.complete(ChatRequest(CHAT, 2, 0.7, 6, 3, 1.0, dict(SAMPLED_TOKENS_FIELDS)))
        client.close()
    assert isinstance(out, ChatFailure) and out.kind == "malformed" and out.attempts == 2
    assert "choice 1 token 0 (id 516)" in out.error
