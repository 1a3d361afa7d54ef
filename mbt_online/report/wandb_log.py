"""Reading wandb's binary `.wandb` record log without wandb's service: the run info, config and
history of an offline run (or one synced elsewhere), for the report.

The log is LevelDB-style: 32 KiB blocks of chunked records, each a protobuf `Record`. Only the
protobuf classes come from the `wandb` package, so a run can be read on a laptop without syncing it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WANDB_BLOCK = 32 * 1024
# file: ":W&B" + magic (2) + version (1); record: crc32c (4) + length (2) + type (1)
WANDB_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[Any]:
    """Protobuf records of a `.wandb` file (LevelDB-style log: 32 KiB blocks, chunked records).

    A run killed mid-write leaves a torn last record; reading stops there, like `wandb sync`.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb record log (no :W&B header)")
    pos, pending = WANDB_HEADER, b""
    while pos + WANDB_HEADER <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < WANDB_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + WANDB_HEADER])
        pos += WANDB_HEADER
        if kind == 0 and length == 0:  # zero padding
            continue
        chunk = data[pos : pos + length]
        pos += length
        if len(chunk) < length or kind not in (FULL, FIRST, MIDDLE, LAST):
            return
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            try:
                record.ParseFromString(pending)
            except Exception:  # noqa: BLE001 - a torn record ends the readable log
                return
            yield record
            pending = b""


def _items(items: Any) -> dict[str, Any]:
    out = {}
    for item in items:
        key = "/".join(item.nested_key) if item.nested_key else item.key
        try:
            out[key] = json.loads(item.value_json)
        except json.JSONDecodeError:
            continue
    return out


def read_wandb_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run info: id, name, config), history rows of one `.wandb` file."""
    info: dict[str, Any] = {"id": path.stem.removeprefix("run-"), "name": None, "config": {}}
    history: list[dict[str, Any]] = []
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            info["id"] = rec.run.run_id or info["id"]
            info["name"] = rec.run.display_name or info["name"]
            info["config"].update(_items(rec.run.config.update))
        elif kind == "config":
            info["config"].update(_items(rec.config.update))
        elif kind == "history":
            history.append(_items(rec.history.item))
    return info, history


def wandb_log_files(p: Path) -> list[Path]:
    """`.wandb` logs of a wandb offline run dir, a WANDB_DIR, or a run dir's wandb/ folder."""
    for pattern in (
        "run-*.wandb",
        "*run-*/run-*.wandb",  # offline-run-<time>-<id>/ (and synced online run-<time>-<id>/)
        "wandb/*run-*/run-*.wandb",
        "wandb/wandb/*run-*/run-*.wandb",
    ):
        found = sorted(p.glob(pattern))
        if found:
            return found
    return []
