"""Reading W&B offline runs back from disk, so tests check what a user would `wandb sync`."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def read_wandb_log(path: Path) -> list:
    """Records of a ``.wandb`` file: W&B's LevelDB-style log (a 7-byte file header, 32 KiB blocks of
    [crc32, length, type] framed chunks) of protobuf ``Record`` messages. wandb 0.31 ships no Python
    reader, so the tests carry this one."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, buf, off = path.read_bytes(), 32768, [], b"", 7
    assert data[:4] == b":W&B"
    while off + 7 <= len(data):
        if block - off % block < 7:  # a block's tail too short for a chunk header is padding
            off += block - off % block
            continue
        _, length, kind = struct.unpack("<IHB", data[off : off + 7])
        if kind == 0 and length == 0:
            break
        buf += data[off + 7 : off + 7 + length]
        off += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            records.append(rec)
            buf = b""
    return records


def wandb_records(run_dir: Path) -> tuple[list[Path], list[dict], dict]:
    """(offline run folders, history rows, config) read back from the W&B offline files."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    rows, config = [], {}
    key = lambda item: item.key or ".".join(item.nested_key)  # noqa: E731
    for r in runs:
        for rec in read_wandb_log(next(r.glob("*.wandb"))):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                rows.append({key(i): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "run":
                config.update({key(i): json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                config.update({key(i): json.loads(i.value_json) for i in rec.config.update})
    return runs, rows, config


def wandb_summary(run_dir: Path) -> dict:
    """The run summary (``run.summary``) of the single offline run under ``run_dir/wandb``."""
    (run,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    summary = {}
    for rec in read_wandb_log(next(run.glob("*.wandb"))):
        if rec.WhichOneof("record_type") == "summary":
            summary.update({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
    return summary


def wandb_run(run_folder: Path) -> dict:
    """One offline run folder read back: its id, name, group, job type, config, history rows and summary."""
    out: dict = {"config": {}, "rows": [], "summary": {}}
    key = lambda item: item.key or ".".join(item.nested_key)  # noqa: E731
    for rec in read_wandb_log(next(run_folder.glob("*.wandb"))):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.update(id=r.run_id, name=r.display_name, group=r.run_group, job_type=r.job_type)
            out["config"].update({key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            out["config"].update({key(i): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["rows"].append({key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
    return out
