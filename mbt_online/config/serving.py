"""`engine.serve`: the student sampled through `vllm serve` processes (`engine.backend=vllm-serve`).

Its own module, beside the engine section that holds it, because these knobs only matter to the
served generator (`mbt_online.generation.served`): how the servers start, how long they may take,
and how the orchestrator talks to them.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from mbt_online.config.section import Section


class ServeConfig(Section):
    """The `vllm serve` processes of `engine.backend=vllm-serve`: one on this machine, or one per
    node of the SLURM allocation when `runtime.launcher=srun` (`runtime.num_machines` of them)."""

    args: list[str] = Field(
        default=[],
        description="Extra `vllm serve` arguments, appended as given after those the engine "
        "section sets (e.g. ['--max-num-batched-tokens', '16384']).",
    )
    srun_args: list[str] = Field(
        default=[],
        description="Extra `srun` options for the step that starts one server per node "
        "(runtime.launcher=srun), e.g. ['--cpus-per-task=16'].",
    )
    port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The servers' port; 0 = a free port on this machine, or under srun "
        "50000 + 4 x (SLURM_JOB_ID % 2500) + the generator's slot, so tasks sharing a node "
        "never collide (and stay clear of TRAIN's rendezvous ports, 29500 + JOBID % 20000).",
    )
    startup_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Seconds every server has to answer /health after a start or a handoff; "
        "past it the start fails naming the server's log file.",
    )
    request_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="Seconds a request may wait for its answer (one answer holds all n "
        "completions of a prompt, so size it for the longest generation).",
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        description="Retries of a request after a connection error, a timeout or a 5xx "
        "(the client's backoff); a request that still fails stops the stage.",
    )
    concurrency: int = Field(
        default=64,
        ge=1,
        description="Requests in flight per server (one request per prompt); vLLM batches "
        "them, so this bounds the batch the server sees.",
    )

    @field_validator("args", "srun_args")
    @classmethod
    def _no_control_characters(cls, value: list[str]) -> list[str]:
        """The arguments become argv entries of a process (and srun's of every node): a newline
        or NUL there is a mistake, never an intent."""
        for arg in value:
            if any(c in arg for c in "\n\r\0"):
                raise ValueError(f"{arg!r} holds a newline, carriage return or NUL")
        return value

    def flag(self, name: str) -> str | None:
        """The value `args` gives flag `name` (`--name value` or `--name=value`; the last one
        wins, as for vLLM's parser), or None when it does not set it."""
        found = None
        for i, arg in enumerate(self.args):
            if arg == name and i + 1 < len(self.args):
                found = self.args[i + 1]
            elif arg.startswith(f"{name}="):
                found = arg.split("=", 1)[1]
        return found
