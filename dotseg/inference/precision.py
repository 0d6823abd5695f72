"""The precision gate's records and the choice a Predictor makes from them: reduced-precision
inference is accepted for a model only by what users care about, Dice against the truth, and the
verdict is recorded per model and CPU. The gate itself runs in :mod:`dotseg.gate` (it needs the
benchmark, a layer above inference).

    dotseg evaluate --gate [--checkpoint C] [--threads 1] [--n 1000]

For every installed engine that can run a reduced precision on this CPU (``bf16`` where the CPU
computes it natively: eager PyTorch autocast and OpenVINO's bf16 hint), the gate predicts the
standard benchmark (:func:`dotseg.evaluation.benchmark_cases`, 1000 images) with that engine in fp32
and in the reduced precision, on the same images in the same rounds, and passes the pair when

- Dice against the truth is within :data:`DICE_TOLERANCE` of fp32's, overall and in every SNR bin, and
- every image's mask agrees with fp32's: Dice(mask, fp32 mask) >= :data:`MASK_AGREEMENT`.

The verdict (with the per-bin table and the latencies) is written beside the engine's cached export
(:func:`dotseg.inference.engines.cache_dir`), keyed by the model's id and this CPU (its model name
and :data:`~dotseg.device.CPU_FEATURES`), and records the engine packages' versions: a record from
another CPU, another model or another OpenVINO/PyTorch never applies. A Predictor with
``precision="auto"`` (the default) runs the fastest passed (engine, precision) pair that is faster
than its fp32 engine; ``precision="fp32"`` pins exact arithmetic; naming ``bf16`` without a passed
record is refused in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Reduced precisions a gate may accept (fp32 is always allowed).
REDUCED = ("bf16", "int8")
PRECISIONS = ("auto", "fp32", *REDUCED)
#: The largest loss of Dice against the truth, overall and in any SNR bin, a reduced precision may cost.
DICE_TOLERANCE = 0.002
#: The smallest Dice between an image's reduced-precision mask and its fp32 mask.
MASK_AGREEMENT = 0.99
#: Images of the gate (the standard benchmark's size).
GATE_N = 1000
RECORD_VERSION = 1


def cpu_key() -> str:
    """This CPU's identity in a record's name: its model name and vector features, hashed."""
    from dotseg.device import cpu_info

    name, features = cpu_info()
    return hashlib.blake2b(f"{name}|{','.join(features)}".encode(), digest_size=5).hexdigest()


def record_path(cache: Path, model_id: str) -> Path:
    return cache / f"{model_id}.gate-{cpu_key()}.json"


def _versions() -> dict[str, str]:
    """The packages whose kernels decide the arithmetic (a new one may round differently)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "openvino", "nncf"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def load_record(caches: list[Path], model_id: str) -> dict[str, Any] | None:
    """The gate record of ``model_id`` on this CPU with today's packages from the first of ``caches``
    that has one, or None (a cut or stale file is ignored with one line: the gate is simply run again)."""
    path = next((p for p in (record_path(c, model_id) for c in caches) if p.is_file()), None)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("version") != RECORD_VERSION or record.get("model_id") != model_id:
            raise ValueError("another format or model")
    except (OSError, ValueError) as e:
        log.info("ignoring the precision gate record %s (%s); fp32 until `dotseg evaluate --gate` runs again", path, e)
        return None
    now = _versions()  # a package the record does not name (nncf installed since) gates nothing it holds
    if any(now.get(pkg) != version for pkg, version in (record.get("packages") or {}).items()):
        log.info(
            "the precision gate record %s was made with %s, this is %s; fp32 until `dotseg evaluate --gate` runs again",
            path,
            record.get("packages"),
            _versions(),
        )
        return None
    return record


def choose(record: dict[str, Any] | None, engine: str, requested: str, engine_fixed: bool) -> tuple[str, str]:
    """(engine, precision) a Predictor runs, from the gate record.

    ``requested`` ``fp32``: (engine, fp32). ``auto``: the fastest passed pair (of ``engine`` only
    when the user named it: ``engine_fixed``) if it beats ``engine``'s fp32, else fp32. A reduced
    precision: that precision on ``engine`` if it passed, else a ValueError saying how to run the gate.
    """
    if requested == "fp32":
        return engine, "fp32"
    rows = [r for r in (record or {}).get("rows", []) if r["passed"]]
    if requested != "auto":
        if any(r["engine"] == engine and r["precision"] == requested for r in rows):
            return engine, requested
        raise ValueError(
            f"precision {requested!r} has not passed the precision gate for this model with engine {engine!r} "
            "on this CPU; run `dotseg evaluate --gate --checkpoint CHECKPOINT` (it records the verdict), or "
            "use precision fp32"
        )
    fp32_ms = {r["engine"]: r["fp32_ms"] for r in (record or {}).get("rows", [])}
    candidates = [r for r in rows if not engine_fixed or r["engine"] == engine]
    if not candidates:
        return engine, "fp32"
    best = min(candidates, key=lambda r: r["ms"])
    if best["ms"] < fp32_ms.get(engine, math.inf):
        return best["engine"], best["precision"]
    return engine, "fp32"
