"""Format 1 (dotseg 0.1, the shipped v1 model among them): the whole config as the contract.

Still read: its contract is taken from the config's ``model`` section and ``synthesis.size``, the
rest becomes provenance, and its ``config_hash`` guards the metadata as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dotseg.checkpoint.meta import CheckpointError, ModelContract, model_identity
from dotseg.configbase import ConfigError, config_hash


def from_format_1(path: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Format-1 metadata (the whole config, unversioned fields) in format-2 form."""
    missing = [
        k for k in ("config", "config_hash", "normalization", "threshold", "metrics", "epoch") if k not in fields
    ]
    if missing:
        raise CheckpointError(f"{path}: corrupt metadata: missing {', '.join(missing)}")
    config = fields["config"]
    if not isinstance(config, dict) or config_hash(config) != fields["config_hash"]:
        raise CheckpointError(
            f"{path}: its config does not match its config_hash {fields['config_hash']!r} "
            "(the metadata was edited or corrupted)"
        )
    synthesis = config.get("synthesis")
    contract = {
        "model": config.get("model"),
        "normalization": fields["normalization"],
        "threshold": fields["threshold"],
        **({"input_size": synthesis["size"]} if isinstance(synthesis, dict) and "size" in synthesis else {}),
    }
    # Format 1 stored no run id: it is the stored config's identity, by the root config's rule (the
    # one place reading a checkpoint consults the root config, and only for these old files).
    from dotseg.config import run_identity

    run_id = run_identity(config)
    epoch = fields["epoch"]
    try:
        model_id = model_identity(ModelContract.from_dict(contract), run_id, epoch)
    except ConfigError:
        model_id = ""  # the contract is refused with its reason right after
    return {
        "contract": contract,
        "run_id": run_id,
        "epoch": epoch,
        "model_id": model_id,
        "provenance": {
            "config": config,
            "config_hash": fields["config_hash"],
            "metrics": fields["metrics"],
            "created": fields.get("created"),
            "dotseg_version": fields.get("dotseg_version"),
        },
    }
