"""The one checkpoint format of dotseg: a single ``.safetensors`` file that describes itself.

    save_checkpoint("runs/x/best.safetensors", model, cfg, threshold=0.5, metrics={"val_dice": 0.88}, epoch=12)
    model, ckpt = build_from_checkpoint("runs/x/best.safetensors")  # eval mode; ckpt.contract, ckpt.model_id

The tensors are the model's ``state_dict`` (parameters and BatchNorm buffers, contiguous, on CPU).
The safetensors header metadata (``str -> str``) holds, each value JSON-encoded (format 2):

=================  ============================================================================
``format``         ``"dotseg-checkpoint"``
``format_version`` int, :data:`FORMAT_VERSION` when written; a newer one is refused
``contract``       the :class:`ModelContract`: what a Predictor needs to reproduce the
                   predictions (model section, input normalization, threshold, training input
                   size). Validated strictly: a wrong contract refuses the load.
``run_id``         the training run's identity (:attr:`dotseg.config.Config.run_id`)
``epoch``          epoch (1-based) after which it was saved
``model_id``       digest of contract, run_id and epoch: the model's identity, checked on load
``provenance``     the :class:`Provenance`: resolved config, metrics, time, dotseg version, and
                   for a promoted sweep trial its sweep and trial. Stored and shown, never able to
                   block a load: a future dotseg may rename any of its keys.
=================  ============================================================================

Format 1 (dotseg 0.1, the shipped v1 model among them) stored the whole config as the contract; it
is still read (:mod:`dotseg.checkpoint.format1`).

Why not ``torch.save``: a PyTorch ``.pt``/``.pth`` file is a pickle, and unpickling can run any
code; safetensors is only a JSON header and raw tensor bytes. And why validate so much on load: the
seed lost days to a "checkpoint" that was an HTML page (``invalid load key, 'E'``), to a model
trained under a config other than the one it was served with, and to renamed state-dict keys.
Every such case here is a :class:`CheckpointError` with one line saying what the file is and what
was expected, raised before any model is built.

The package, one concept per module, in the order a load crosses them: :mod:`~dotseg.checkpoint.meta`
(the metadata types, the model identity, the error), :mod:`~dotseg.checkpoint.sniff` (what a file
is), :mod:`~dotseg.checkpoint.format1`, :mod:`~dotseg.checkpoint.store` (save, check, load, build) and
:mod:`~dotseg.checkpoint.training` (the training-state directory). None imports the root config
when a checkpoint loads: only format-1 run ids and ``LoadedCheckpoint.cfg`` (provenance) reach for
it, lazily.
"""

from dotseg.checkpoint.meta import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointMeta,
    ModelContract,
    Provenance,
    RunConfig,
    model_identity,
)
from dotseg.checkpoint.store import (
    LoadedCheckpoint,
    build_from_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    trained_synthesis,
    write_checkpoint,
)
from dotseg.checkpoint.training import (
    HISTORY_FILE,
    MODEL_FILE,
    STATE_FILE,
    load_training_checkpoint,
    save_training_checkpoint,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "HISTORY_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "CheckpointError",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "ModelContract",
    "Provenance",
    "RunConfig",
    "build_from_checkpoint",
    "load_checkpoint",
    "load_training_checkpoint",
    "model_identity",
    "read_meta",
    "save_checkpoint",
    "save_training_checkpoint",
    "trained_synthesis",
    "write_checkpoint",
]
