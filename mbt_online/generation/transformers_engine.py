"""The student's generator over transformers' `generate`: the `engine.backend=transformers` choice.

The same `contracts.Generator` interface as the vLLM `vllm_engine.Engine` (TRL's `use_vllm=False`
convention): for machines where vLLM does not install, and as the rollout benchmark's baseline.
It mirrors the vLLM engine's contract rather than its speed:

- prompts are rendered by the same `engine.render_chat` and rejected by the same length check;
- generation stops at the end-of-turn token (the tokenizer's and the generation config's EOS ids,
  which vLLM stops at too) or a stop string ("stop"), else at `max_tokens` ("length"); token counts
  include the EOS token, as vLLM's do;
- temperature 0 is greedy, decoded once and repeated n times;
- sampling draws every (prompt, sample) row from its own `torch.Generator`, seeded like vLLM seeds
  the request (`request_seed(seed, index) + k` for sample k), so a prompt's samples do not depend on
  which prompts share its batch (the numbers differ from vLLM's: only greedy output is the same).

Prompts are batched with left padding, `batch_size` prompts x n samples per `generate` call.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from mbt_online.contracts import Completion, HandoffMode, ReleaseMode
from mbt_online.generation.handoff import dispatch_handoff
from mbt_online.generation.requests import check_prompt_lengths, render_chat, request_seed

if TYPE_CHECKING:
    from mbt_online.config import Config

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class RowSampler(LogitsProcessor):
    """Samples each batch row with its own generator, then leaves only that token for greedy.

    `generate` draws sampled tokens from the process-wide RNG, shared by all rows, so a row's
    draws would depend on the rows beside it. Run with `do_sample=False`, this processor does the
    sampling itself (temperature, then top-k, then top-p, as vLLM applies them) and returns
    logits whose argmax is the sampled token.
    """

    def __init__(
        self,
        generators: list[torch.Generator],
        temperature: float,
        top_k: int,
        top_p: float,
        record: bool = False,
    ) -> None:
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.generators = generators
        self.temperature = temperature
        # with `record`, per step, each row's log-probability of the token it drew, under the
        # distribution it was drawn from (after temperature, top-k and top-p: vLLM's
        # processed_logprobs); off otherwise: a log-softmax over the vocabulary every step
        self.record = record
        self.logprobs: list[list[float]] = []
        self.warpers: list[Any] = []
        if top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        picked = torch.stack(
            [
                torch.multinomial(probs[row], 1, generator=gen)[0]
                for row, gen in enumerate(self.generators)
            ]
        )
        rows = torch.arange(len(picked), device=scores.device)
        if self.record:
            self.logprobs.append(torch.log_softmax(scores, dim=-1)[rows, picked].tolist())
        out = torch.full_like(scores, float("-inf"))
        out[rows, picked] = 0.0
        return out


class TransformersEngine:
    """A transformers model for one student; generation takes chat messages, not raw strings."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        seed: int = 0,
        batch_size: int = 8,
        device: str | None = None,
        chat_template: str = "model",
    ) -> None:
        self.max_model_len = max_model_len
        self.chat_template = chat_template  # prompts.use_chat_template: the same as training's
        self.seed = seed  # sampling is seeded per request; kept for parity with `Engine`
        self.batch_size = batch_size
        self.dtype = _DTYPES[dtype]
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model: Any = None
        self._base: Any = None
        self._start(model_path)

    @classmethod
    def from_config(
        cls, cfg: Config, model_path: str, *, lora: bool | None = None, seed: int | None = None
    ) -> TransformersEngine:
        """An engine for `model_path` from the run config; `lora` needs no reservation here."""
        from mbt_online.generation.backends import engine_kwargs

        kw = engine_kwargs(cfg, lora=lora, seed=seed)
        return cls(
            model_path,
            dtype=kw["dtype"],
            max_model_len=kw["max_model_len"],
            seed=kw["seed"],
            chat_template=kw["chat_template"],
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def _start(self, model_path: str) -> None:
        from transformers import AutoTokenizer

        from mbt_online.prompts import use_chat_template

        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer = use_chat_template(tokenizer, self.chat_template)
        self._load_base(model_path)

    def _load_base(self, model_path: str) -> None:
        """The model at `model_path`, with the old one freed first (peak memory: one model)."""
        from transformers import AutoModelForCausalLM

        self._release()
        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=self.dtype)
        self._base = self._model = model.to(self.device).eval()
        self.model_path = str(model_path)

    def _release(self) -> None:
        self._model = self._base = None
        self._release_cache()

    @staticmethod
    def _release_cache() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Free the model; safe to call twice."""
        self._release()

    def release(self, mode: ReleaseMode) -> None:
        """Give the device back for TRAIN. "stop" frees the model (the loop builds a new engine on
        the new folder). "sleep" parks the weights in host memory, like vLLM's level-1 sleep: the
        next `load_weights` replaces them from the folder anyway, any other use moves them back.
        On a CPU-only machine there is no device to give back and "sleep" changes nothing."""
        if mode == "stop":
            self.close()
        elif mode == "sleep":
            self._require_open()
            if self.device != "cpu":
                self._model.to("cpu")
                self._release_cache()
        else:
            raise ValueError(f"unknown release mode {mode!r}; use stop or sleep")

    def _wake(self) -> None:
        """The weights back on the device after a sleep (a no-op when they are there)."""
        self._require_open()
        if self._model.device.type != torch.device(self.device).type:
            self._model.to(self.device)

    def restart(self, model_path: str) -> None:
        """A fresh tokenizer and model on `model_path` (the adapter selection is dropped)."""
        self._start(model_path)

    # -- weights ---------------------------------------------------------------------------------

    def load_weights(self, model_dir: str) -> None:
        """Serve the weights of a `save_pretrained` folder (same tokenizer); drops the adapter."""
        self._require_open()
        self._load_base(model_dir)

    def set_lora(self, adapter_dir: str | None) -> None:
        """Serve later generations through this PEFT adapter (None = the base weights)."""
        self._wake()
        if self._model is not self._base:  # take the previous adapter's layers out again
            self._base = self._model.unload()
            self._model = self._base
        if adapter_dir is None:
            return
        from peft import PeftModel

        self._model = PeftModel.from_pretrained(self._base, str(adapter_dir)).eval()

    def handoff(self, mode: HandoffMode, model_dir: str, adapter_dir: str | None = None) -> None:
        """Give the engine the round's new policy the way the config asks (as `Engine.handoff`)."""
        dispatch_handoff(self, mode, model_dir, adapter_dir)

    # -- generation ------------------------------------------------------------------------------

    def render(self, messages: list[dict]) -> list[int]:
        """Prompt token ids for one chat, exactly as the vLLM engine renders it."""
        return render_chat(self.tokenizer, messages)

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
        """n completions per chat, in order; the contract of `Engine.generate` (`progress` is
        accepted and ignored; `index_offset` numbers the chats for their seeds; `logprobs` keeps
        each completion's token ids and the log-probabilities it was sampled with)."""
        self._wake()
        prompts = [self.render(chat) for chat in messages]
        check_prompt_lengths(prompts, self.max_model_len, max_tokens, index_offset)
        greedy = temperature == 0
        if greedy and logprobs:
            raise ValueError("logprobs are reported for sampled completions (temperature > 0)")
        per_prompt = 1 if greedy else n
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(enumerate(prompts[start : start + self.batch_size], start + index_offset))
            rows = [(i, ids, k) for i, ids in chunk for k in range(per_prompt)]
            sampler = None
            if not greedy:
                sampler = self._sampler(rows, seed, temperature, top_k, top_p, logprobs)
            done = self._generate_rows(rows, max_tokens, sampler, stop or [], logprobs)
            for j in range(len(chunk)):
                got = done[j * per_prompt : (j + 1) * per_prompt]
                out.append(got * n if greedy else got)
        return out

    def _sampler(self, rows, seed, temperature, top_k, top_p, record) -> RowSampler:
        """One generator per row, seeded as vLLM seeds sample k of request `index`."""
        gens = [
            torch.Generator(device=self.device).manual_seed(request_seed(seed, i) + k)
            for i, _, k in rows
        ]
        return RowSampler(gens, temperature, top_k, top_p, record)

    def _generate_rows(
        self,
        rows: list[tuple[int, list[int], int]],
        max_tokens: int,
        sampler: RowSampler | None,
        stop: list[str],
        logprobs: bool = False,
    ) -> list[Completion]:
        from transformers import GenerationConfig

        eos = self._eos_ids()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]
        width = max(len(ids) for _, ids, _ in rows)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids, _ in rows])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids, _ in rows])
        # an explicit config: the checkpoint's own sampling defaults must not leak in
        config = GenerationConfig(
            max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad
        )
        with torch.inference_mode():
            seqs = self._model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler] if sampler else []),
            )
        new = seqs[:, width:].tolist()
        done = [
            self._completion(tokens, len(ids), set(eos), stop)
            for tokens, (_, ids, _) in zip(new, rows, strict=True)
        ]
        if logprobs and sampler is not None:
            for j, (c, (_, ids, _)) in enumerate(zip(done, rows, strict=True)):
                c.prompt_ids, c.token_ids = list(ids), new[j][: c.completion_tokens]
                c.logprobs = [step[j] for step in sampler.logprobs[: c.completion_tokens]]
        return done

    def _eos_ids(self) -> list[int]:
        """The tokenizer's EOS and the generation config's: vLLM stops at both."""
        ids = [self.tokenizer.eos_token_id]
        configured = getattr(self._base.generation_config, "eos_token_id", None)
        ids += configured if isinstance(configured, list) else [configured]
        return list(dict.fromkeys(i for i in ids if i is not None))

    def _completion(
        self, tokens: list[int], prompt_tokens: int, eos: set[int], stop: list[str]
    ) -> Completion:
        """Cut a row at its first EOS (kept in the count, as vLLM counts it) or stop string."""
        cut = next((j + 1 for j, t in enumerate(tokens) if t in eos), None)
        tokens = tokens if cut is None else tokens[:cut]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        hits = [text.index(s) for s in stop if s in text]
        if hits:  # vLLM drops the stop string and counts the tokens that produced it
            at = min(hits)
            text, cut = text[:at], self._tokens_until(tokens, stop)
            tokens = tokens[:cut]
        reason = "stop" if cut is not None else "length"
        return Completion(text, reason, prompt_tokens, len(tokens))

    def _tokens_until(self, tokens: list[int], stop: list[str]) -> int:
        """The shortest prefix of `tokens` whose text holds a stop string."""
        for j in range(1, len(tokens) + 1):
            text = self.tokenizer.decode(tokens[:j], skip_special_tokens=True)
            if any(s in text for s in stop):
                return j
        return len(tokens)

    def _require_open(self) -> None:
        if self._model is None:
            raise RuntimeError("the engine is closed")
