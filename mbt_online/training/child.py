"""The staged TRAIN child: `accelerate launch ... -m mbt_online.training.child <job.json>`.

Every process of the launch runs this: it reads the job file `staged.StagedTrainer` wrote, the
run's own config.yaml and BUILD's datasets, and runs the same `trainer.TrlTrainer` as in-process
mode (accelerate's environment makes it one rank of the world). Rank 0 then writes
`result.json` atomically; the exit status says whether it worked. Nothing here talks to the
orchestrator but those files, and the STOP file it writes when asked to stop: that, like a
SIGUSR1 to this process, sets the preemption flag the trainer checks at its safe points, and the
child exits with `PREEMPTED_EXIT`. A SIGINT or SIGTERM (the orchestrator stopping the child's
process group) ends it where it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mbt_online.contracts import TrainJob
from mbt_online.training.staged import POLL_S, STOP_FILE

if TYPE_CHECKING:
    from mbt_online.config import Config


def load_job(job_file: Path) -> tuple[Config, TrainJob]:
    """The run's config and the TrainJob the job file describes (datasets read from disk)."""
    from mbt_online.config import load_config
    from mbt_online.rundir import load_dataset_dir

    spec = json.loads(Path(job_file).read_text())
    cfg = load_config(Path(spec["run_dir"]) / "config.yaml")

    def rows(key: str) -> object:
        if spec.get(key) is None:  # a job file written before GRPO existed has no "grpo"
            return []
        data = load_dataset_dir(Path(spec[key]))
        if len(data) != spec[f"{key}_rows"]:
            raise ValueError(
                f"{spec[key]} holds {len(data)} rows, the job names {spec[f'{key}_rows']}"
            )
        return data

    job = TrainJob(
        start_model=spec["start_model"],
        sft=rows("sft"),  # type: ignore[arg-type]
        pairs=rows("dpo"),  # type: ignore[arg-type]
        out_dir=Path(spec["out_dir"]),
        seed=int(spec["seed"]),
        reference=spec["reference"],
        grpo=rows("grpo"),  # type: ignore[arg-type]
    )
    return cfg, job


def main(argv: list[str] | None = None) -> int:
    from mbt_online import preemption
    from mbt_online.training.staged import inproc_trainer, write_result

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mbt_online.training.child JOB_JSON", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg, job = load_job(Path(args[0]))
    with preemption.handling(), watching_stop_file(job.out_dir / STOP_FILE):
        try:
            trained = inproc_trainer(cfg).train(job)
        except preemption.Preempted as e:  # at a checkpoint: the resumed stage continues there
            logging.getLogger("mbt_online").warning("TRAIN child: %s", e)
            return preemption.PREEMPTED_EXIT
        except preemption.Interrupted as e:  # the orchestrator stops its group: no traceback
            logging.getLogger("mbt_online").warning("TRAIN child: %s", e)
            return preemption.exit_code(e.signal_name)
    if int(os.environ.get("RANK", "0")) == 0:  # accelerate sets RANK in multi-process launches
        write_result(job.out_dir, trained)
    return 0


@contextlib.contextmanager
def watching_stop_file(stop_file: Path, every_s: float = POLL_S) -> Iterator[None]:
    """While the block runs, the orchestrator's STOP file (written when it is asked to stop) sets
    this process's preemption flag, which the trainer checks at its safe points."""
    from mbt_online import preemption

    done = threading.Event()

    def poll() -> None:
        while not done.wait(every_s):
            if stop_file.exists():
                preemption.request(f"a stop request ({stop_file})")
                return

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


if __name__ == "__main__":
    sys.exit(main())
