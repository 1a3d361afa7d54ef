"""The student sampled through `vllm serve` (`engine.backend=vllm-serve`): a `contracts.Generator`
over one or more OpenAI-compatible servers, reached with the run's own chat client (`llm.client`:
retries, timeouts, bounded concurrency; no cache, since a rollout must be drawn, not replayed).

This is how a multi-node member samples on every node: the orchestrator on the first node starts
one server per node (`servers`: a `srun --overlap` step) and splits the prompts among them as
data-parallel engines do (`data_parallel.slices`, contiguous and in order), each prompt seeded by
its global index (`engine.request_seed`), so how the prompts are split never changes what a prompt
draws. A request per prompt asks for its n samples with the prompt's seed (vLLM gives sample k
the seed + k, as in `Engine`) and vLLM's token ids, so every `Completion` carries the same finish
reason and token counts the in-process engine gives. GRPO's samples (`generate(logprobs=True)`)
also ask for each sampled token's log-probability (`wire.SAMPLED_TOKENS_FIELDS`; the servers run
with `--logprobs-mode processed_logprobs` when train.grpo is on, as `Engine` does) and keep the
server's prompt and completion token ids: a server that does not return them is refused, naming
it, rather than trained on guesses.

Prompts are rendered here too, with the student's template, to refuse one that leaves less than
`max_tokens` of room before anything is sent (`PromptTooLongError`, as `Engine` does); the servers
render the same template (`--chat-template` for `student.chat_template=verbatim`).

Weights change by restarting the servers on the new folder (every `engine.handoff` mode but lora,
which the config refuses: serving a LoRA adapter is not built). `release` stops the servers, and
"sleep" restarts them on the next handoff or generation; `close` stops them, and a generator
dropped without `close` stops them when it is collected or the interpreter exits.
"""

from __future__ import annotations

import dataclasses
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbt_online.contracts import Completion, HandoffMode, ReleaseMode
from mbt_online.generation.data_parallel import slices
from mbt_online.generation.requests import check_prompt_lengths, render_chat, request_seed
from mbt_online.generation.vllm_servers import (
    SERVED_NAME,
    SLOTS,
    Servers,
    ServeSpec,
    serve_spec,
    start_servers,
)

if TYPE_CHECKING:
    from mbt_online.config import Config
    from mbt_online.llm.client import LLMClient
    from mbt_online.llm.wire import ChatFailure, ChatRequest, ChatResult

CHAT_TEMPLATE_FILE = "chat_template.jinja"
# The client's own cap on a reply body (teacher.max_response_bytes' default), and what GRPO's
# samples add per token: vLLM's log-prob entry (the token as "token_id:<id>", the value, its
# UTF-8 bytes) and the id, about 110 bytes measured on vllm 0.32, bounded with room to spare
BASE_RESPONSE_BYTES, LOGPROB_BYTES_PER_TOKEN = 8_000_000, 256


class ServedGenerationError(RuntimeError):
    """A request that failed for good against a server (its URL and log named)."""


class ServedGenerator:
    """`vllm serve` processes behind the one `Generator` interface."""

    def __init__(
        self,
        spec: ServeSpec,
        model_path: str,
        *,
        log_dir: Path,
        max_model_len: int,
        chat_template: str = "model",
        request_timeout_s: float = 1800.0,
        max_retries: int = 2,
        concurrency: int = 64,
        max_response_bytes: int = BASE_RESPONSE_BYTES,
    ) -> None:
        self.spec, self.log_dir = spec, Path(log_dir)
        self.max_model_len, self.chat_template = max_model_len, chat_template
        self._client_kw = dict(
            timeout_s=request_timeout_s,
            max_retries=max_retries,
            concurrency=concurrency,
            max_response_bytes=max_response_bytes,
        )
        self.slot, self._closed = SLOTS.take(), False
        self._servers: Servers | None = None
        self._clients: list[LLMClient] = []
        self._finalizer = weakref.finalize(self, _shutdown, self.slot, [None], [])
        self.model_path = str(model_path)
        try:
            self._start(self.model_path)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(
        cls, cfg: Config, model_path: str, *, lora: bool | None = None, seed: int | None = None
    ) -> ServedGenerator:
        """Servers sized by the run config (`servers.serve_spec`), logs under `<run dir>/serve`
        (a temporary folder when the run directory does not exist, e.g. a check script)."""
        run_dir = cfg.run_dir()
        log_dir = run_dir / "serve" if run_dir.is_dir() else Path(tempfile.mkdtemp("-serve"))
        serve = cfg.engine.serve
        spec = serve_spec(cfg, lora=lora, seed=seed)
        if cfg.student.chat_template == "verbatim":  # the servers render what `render` renders
            from mbt_online.prompts import VERBATIM_CHAT_TEMPLATE

            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / CHAT_TEMPLATE_FILE).write_text(VERBATIM_CHAT_TEMPLATE)
            flags = [*spec.flags, "--chat-template", str(log_dir / CHAT_TEMPLATE_FILE)]
            spec = dataclasses.replace(spec, flags=flags)
        return cls(
            spec,
            model_path,
            log_dir=log_dir,
            max_model_len=cfg.student.max_model_len,
            chat_template=cfg.student.chat_template,
            request_timeout_s=serve.request_timeout_s,
            max_retries=serve.max_retries,
            concurrency=serve.concurrency,
            max_response_bytes=response_cap(cfg),
        )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """Each running server's base URL (empty while stopped)."""
        return [] if self._servers is None else list(self._servers.urls)

    @property
    def pid(self) -> int | None:
        """The process group leader (a server, or the srun step); None while stopped."""
        return None if self._servers is None else self._servers.proc.pid

    def _start(self, model_path: str) -> None:
        from transformers import AutoTokenizer

        from mbt_online.llm.client import LLMClient
        from mbt_online.prompts import use_chat_template

        self.tokenizer = use_chat_template(
            AutoTokenizer.from_pretrained(model_path), self.chat_template
        )
        self._servers = start_servers(self.spec, model_path, self.log_dir, self.slot)
        self._clients = [
            LLMClient(f"{url}/v1", model=SERVED_NAME, api_key_env="", **self._client_kw)
            for url in self._servers.urls
        ]
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, _shutdown, self.slot, [self._servers], list(self._clients)
        )
        self.model_path = str(model_path)

    def _stop(self) -> None:
        for client in self._clients:
            client.close()
        if self._servers is not None:
            self._servers.stop()
        self._servers, self._clients = None, []

    def restart(self, model_path: str) -> None:
        """The servers again, on `model_path`."""
        self._stop()
        self._start(model_path)

    def handoff(self, mode: HandoffMode, model_dir: str, adapter_dir: str | None = None) -> None:
        """Serve `model_dir` from now on: a restart, whatever `mode` (reload and restart give the
        same weights); "lora" is refused, as the config refuses it."""
        if mode == "lora" or adapter_dir is not None:
            raise ValueError("engine.backend=vllm-serve serves no LoRA adapter; use restart")
        if mode not in ("reload", "restart"):
            raise ValueError(f"unknown handoff mode {mode!r}; use reload or restart")
        self.restart(model_dir)

    def release(self, mode: ReleaseMode) -> None:
        """Stop the servers for TRAIN: "stop" closes the generator; "sleep" keeps it, and the next
        handoff (or generation, on the same folder) starts the servers again."""
        if mode == "stop":
            self.close()
        elif mode == "sleep":
            self._stop()
        else:
            raise ValueError(f"unknown release mode {mode!r}; use stop or sleep")

    def close(self) -> None:
        """Stop the servers and give the slot back; safe to call twice."""
        self._stop()
        self._finalizer.detach()
        if not self._closed:
            SLOTS.give(self.slot)
        self._closed = True

    # -- generation ------------------------------------------------------------------------------

    def generate(
        self,
        messages: list[list[dict]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        top_k: int,
        max_tokens: int,
        seed: int,
        stop: list[str] | None = None,
        progress: bool = True,
        index_offset: int = 0,
        logprobs: bool = False,
    ) -> list[list[Completion]]:
        """n completions per chat, in order (`sample`); a prompt that leaves less than
        `max_tokens` of room is refused before anything is sent. With `logprobs` (GRPO's
        samples) each keeps the server's prompt and completion token ids and the sampled tokens'
        log-probabilities. `progress` is accepted and unused (the servers log their own)."""
        if self._closed:
            raise RuntimeError("the served generator is closed")
        if self._servers is None:  # asleep since release("sleep"): the same folder again
            self._start(self.model_path)
        prompts = [render_chat(self.tokenizer, chat) for chat in messages]
        check_prompt_lengths(prompts, self.max_model_len, max_tokens, index_offset)
        assert self._servers is not None
        where = [
            f"{u} (log: {f})" for u, f in zip(self._servers.urls, self._servers.logs, strict=True)
        ]
        return sample(
            self._clients,
            where,
            messages,
            SamplingArgs(n, temperature, top_p, top_k, max_tokens, seed, stop, logprobs),
            index_offset,
        )


@dataclasses.dataclass(frozen=True)
class SamplingArgs:
    """One `generate` call's sampling parameters."""

    n: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    stop: list[str] | None = None
    logprobs: bool = False  # each sampled token's id and log-prob too (GRPO's samples)


def response_cap(cfg: Config) -> int:
    """The served clients' cap on a reply body: the client's own, raised when train.grpo is on by
    what a rollout's log-prob entries add (rollout.samples x rollout.max_tokens tokens), so a
    GRPO rollout of long samples is not refused as too large by its own server."""
    if not cfg.train.grpo.enabled:
        return BASE_RESPONSE_BYTES
    tokens = cfg.rollout.samples * cfg.rollout.max_tokens
    return BASE_RESPONSE_BYTES + tokens * LOGPROB_BYTES_PER_TOKEN


def sample(
    clients: list[LLMClient],
    where: list[str],
    messages: list[list[dict]],
    args: SamplingArgs,
    index_offset: int = 0,
) -> list[list[Completion]]:
    """n completions per chat from the servers behind `clients`, in order: client s samples the
    s-th contiguous slice (`slices`), all slices at once, every prompt seeded by its global index.
    At temperature 0 one greedy completion is drawn and repeated n times (vLLM refuses n > 1 with
    greedy decoding), as `Engine.generate` does. `where` names each server in errors."""
    from mbt_online.llm.wire import SAMPLED_TOKENS_FIELDS

    copies = args.n if args.temperature == 0 else 1
    extra: dict[str, Any] = {"top_k": args.top_k, "return_token_ids": True}
    if args.logprobs:
        extra.update(SAMPLED_TOKENS_FIELDS)
    if args.stop:
        extra["stop"] = list(args.stop)
    shards = slices(len(messages), len(clients))
    requests = [
        [request(chat, args, args.n // copies, i, extra) for i, chat in enumerate(part, first)]
        for part, first in ((messages[a:b], index_offset + a) for a, b in shards)
    ]
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        answers = list(pool.map(lambda c, r: c.chat_many(r), clients, requests))
    out = []
    for server, ((start, _), shard) in enumerate(zip(shards, answers, strict=True)):
        for i, answer in enumerate(shard, index_offset + start):
            out.append(completions(answer, where[server], i, args.logprobs) * copies)
    return out


def completions(
    answer: ChatResult | ChatFailure, where: str, index: int, logprobs: bool = False
) -> list[Completion]:
    """The `Completion`s of prompt `index`'s answer, or ServedGenerationError naming the server;
    with `logprobs`, each with its token ids and log-probs (`sampled`)."""
    from mbt_online.llm.wire import ChatFailure

    if isinstance(answer, ChatFailure):
        raise ServedGenerationError(
            f"prompt #{index}: vllm serve at {where} failed: {answer.kind} after "
            f"{answer.attempts} attempt(s): {answer.error}"
        )
    counts = answer.completion_tokens
    if len(counts) != len(answer.texts):
        raise ServedGenerationError(f"prompt #{index}: {where} returned no token ids")
    prompt_tokens = answer.usage.get("prompt_tokens", 0)
    out = [
        Completion(text, reason, prompt_tokens, count)
        for text, reason, count in zip(answer.texts, answer.finish_reasons, counts, strict=True)
    ]
    return sampled(out, answer, f"prompt #{index}: {where}") if logprobs else out


def sampled(out: list[Completion], answer: ChatResult, where: str) -> list[Completion]:
    """`out` with what GRPO trains on, from the server's reply: the prompt's token ids (the
    server's own rendering, what the tokens were drawn after), each completion's token ids and
    their log-probs, or ServedGenerationError saying what `where` did not return."""
    if answer.prompt_ids is None:
        raise ServedGenerationError(
            f"{where} returned no prompt token ids (vLLM's `return_token_ids`); GRPO trains on "
            "the exact tokens sampled: use a vLLM server that returns them"
        )
    missing = [k for k, s in enumerate(answer.samples) if s.logprobs is None]
    if len(answer.samples) != len(out) or missing:
        raise ServedGenerationError(
            f"{where} returned no log-probs for the sampled tokens of completion "
            f"{(missing or [0])[0]} (asked with `logprobs: true`); GRPO's importance sampling "
            "needs the sampler's own: use a vLLM server that returns them"
        )
    for c, s in zip(out, answer.samples, strict=True):
        c.prompt_ids, c.token_ids, c.logprobs = list(answer.prompt_ids), s.token_ids, s.logprobs
    return out


def request(
    chat: list[dict], args: SamplingArgs, n: int, index: int, extra: dict[str, Any]
) -> ChatRequest:
    """The request for prompt `index` (its global index): seeded as `Engine` seeds it."""
    from mbt_online.llm.wire import ChatRequest

    seed = request_seed(args.seed, index)
    return ChatRequest(chat, n, args.temperature, args.max_tokens, seed, args.top_p, dict(extra))


def _shutdown(slot: int, servers: list[Servers | None], clients: list[LLMClient]) -> None:
    """A generator collected (or the interpreter exiting) without `close`: no server outlives
    it. Holds no reference to the generator itself, which `weakref.finalize` requires."""
    for client in clients:
        client.close()
    for s in servers:
        if s is not None:
            s.stop()
    SLOTS.give(slot)
