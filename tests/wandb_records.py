"""Read an offline W&B run back from its `.wandb` transaction log, decoded with wandb's own protobuf records."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024  # the log is LevelDB-style: 32 KiB blocks of checksummed chunks, after a 7-byte file header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_run(path: Path) -> dict:
    """{'run': the run record, 'history': [rows], 'summary': {...}, 'config': {...}} of one offline run."""
    run, history, summary, config = None, [], {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update(_items(record.run.config.update))
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
    return {"run": run, "history": history, "summary": summary, "config": config}


def _items(items) -> dict:
    """Key/value items; a key with a slash arrives split into nested_key."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
