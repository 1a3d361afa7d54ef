"""What `mbt_online.training.trainer` (the SFT / DPO trainer) is built from, one concern per module.

`rows`: the TRL dataset rows and their end-of-turn cuts; `args`: the TRL arguments (batch sizes
from the world size, platform defaults, checkpoints); `saving`: the model folder written safely
under sharding (the full state dict gathered, rank 0 writes, LoRA merged on the CPU) and the
in-stage checkpoints; `history`: per-step logs, `log_history.jsonl`, the `train/*` metrics and
peak memory.
"""
