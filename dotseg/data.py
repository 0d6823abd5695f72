"""Ray Data pipelines that synthesize samples in parallel workers, on the fly.

Rows are sample indices; a map_batches task turns a block of indices into a batch with
:func:`dotseg.synthesis.make_batch`. Because a sample is a pure function of (config, seed, index,
noise knobs), the result does not depend on how rows are split into blocks, how many tasks run
or on which node.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from dotseg.configbase import Section
from dotseg.normalize import normalize
from dotseg.synthesis import SynthesisConfig, make_batch


class LabelledData(Section):
    """One labelled dataset to train on (see :mod:`dotseg.labelled` for the layouts)."""

    path: str
    """A folder or a bucket prefix (``s3://``, ``gs://``) of image/mask pairs."""
    weight: float = Field(1.0, gt=0.0)
    """Relative share of the labelled samples drawn from this dataset."""


class DataConfig(Section):
    """How Ray Data synthesizes training and validation samples, and mixes in labelled images."""

    synth_tasks: int = Field(2, ge=1, le=4096)
    """Ray Data tasks synthesizing in parallel (per training run)."""
    rows_per_block: int = Field(32, ge=1, le=100000)
    """Samples per Ray Data block (larger blocks amortize per-task overhead)."""
    cpus_per_task: float = Field(0.5, gt=0.0, le=64)
    """Logical CPUs each synthesis task reserves; keep the total below the cluster's free CPUs."""
    prefetch_batches: int = Field(2, ge=0, le=64)
    """Batches each training worker prefetches."""
    augment: bool = False
    """Training samples get one of the 8 flips / 90-degree rotations (drawn per sample from its seed
    and index, so a resumed run sees the same images); validation never does."""
    priority: Literal["normal", "idle"] = "normal"
    """CPU priority of the synthesis tasks: ``idle`` (Linux SCHED_IDLE, for the duration of a task)
    runs them only on cycles the training workers leave free, so on a machine whose cores the
    workers' torch threads fill, synthesis fills the gaps instead of preempting those threads (a
    descheduled thread stalls every parallel op of its step). Elsewhere ``normal``."""
    labelled: tuple[LabelledData, ...] = ()
    """Users' labelled datasets mixed into training (fine-tuning): ``[{path: DIR_OR_URI, weight: 1}]``.
    Each is checked whole when the run starts; its content digest goes into the checkpoint."""
    labelled_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """Share of training samples drawn from ``labelled`` (a random ``synthesis.size`` window of a
    training pair, with one of the 8 flips / rotations); the rest are synthesized, following the
    curriculum. Drawn per sample from its seed and index, like the rest of a sample."""
    labelled_holdout: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of each labelled dataset held out of training (chosen by ``train.seed``) and validated
    on every epoch as ``labelled_dice``, which early stopping and the best checkpoint then follow."""


#: Stream of a sample's augmentation draw (the generator uses 0-2, see dotseg.synthesis.generate).
_AUGMENT_STREAM = 3
#: Stream of a sample's labelled-or-synthetic draw, and of which labelled window it is.
_LABELLED_STREAM = 4


def dihedral(out: dict[str, np.ndarray], seed: int, ids: np.ndarray, keys: Sequence[str]) -> None:
    """In place: sample ``i`` of every ``keys`` array (B, H, W) gets the flip / 90-degree rotation
    drawn from ``(seed, ids[i])``, the same one for all keys (image, mask and clean stay aligned)."""
    for i, index in enumerate(ids):
        k = int(np.random.default_rng([int(seed), int(index), _AUGMENT_STREAM]).integers(8))
        for key in keys:
            x = out[key][i]
            y = np.rot90(x, k % 4)
            out[key][i] = y[:, ::-1] if k >= 4 else y


def _synthesize(batch: dict[str, np.ndarray], *, priority: str = "normal", **kwargs: Any) -> dict[str, np.ndarray]:
    """The Ray Data UDF: :func:`_synthesize_batch` at the configured CPU priority."""
    with _scheduling(priority):
        return _synthesize_batch(batch, **kwargs)


@contextlib.contextmanager
def _scheduling(priority: str) -> Iterator[None]:
    """Run the block under SCHED_IDLE when ``priority`` is ``idle`` (and the OS has it), then give
    the worker process its policy back: Ray reuses the process for other tasks."""
    if priority != "idle" or not hasattr(os, "SCHED_IDLE"):
        yield
        return
    before, param = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    try:
        yield
    finally:
        # Unprivileged with a low RLIMIT_NICE, Linux refuses the way back: the process then stays
        # idle-priority, slower under load but correct.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, before, param)


def _synthesize_batch(
    batch: dict[str, np.ndarray],
    *,
    cfg: SynthesisConfig,
    seed: int,
    offset: int,
    noise_scale: float,
    mixed_prob: float,
    noisy: bool,
    columns: Sequence[str] | None,
    model_input: bool,
    augment: bool = False,
    labelled: LabelledMix | None = None,
) -> dict[str, np.ndarray]:
    ids = batch["id"] + offset
    if labelled is not None:
        return _mixed_batch(cfg, seed, ids, noise_scale, mixed_prob, augment, model_input, labelled)
    out = make_batch(cfg, seed, ids, noise_scale=noise_scale, mixed_prob=mixed_prob, noisy=noisy)
    if columns is not None and "clean" in columns:  # the noise-free copies of the same samples
        out["clean"] = make_batch(cfg, seed, ids, noise_scale=noise_scale, mixed_prob=mixed_prob, noisy=False)["image"]
    if augment:
        dihedral(out, seed, ids, [k for k in ("image", "mask", "clean") if k in out])
    if model_input:  # in the worker: the trainer receives model input
        for key in ("image", "clean"):
            if key in out:
                out[key] = normalize(out[key])
    return out if columns is None else {k: out[k] for k in columns}


@dataclass(frozen=True)
class LabelledMix:
    """What a training task needs to draw labelled samples: the datasets, their weights, the
    share of labelled samples and the run's split seed (every task computes the same split)."""

    paths: tuple[str, ...]
    weights: tuple[float, ...]
    fraction: float
    holdout: float
    split_seed: int

    @classmethod
    def of(cls, data: DataConfig, split_seed: int) -> LabelledMix | None:
        if not data.labelled:
            return None
        return cls(
            tuple(d.path for d in data.labelled),
            tuple(d.weight for d in data.labelled),
            data.labelled_fraction,
            data.labelled_holdout,
            split_seed,
        )


def _mixed_batch(
    cfg: SynthesisConfig,
    seed: int,
    ids: np.ndarray,
    noise_scale: float,
    mixed_prob: float,
    augment: bool,
    model_input: bool,
    mix: LabelledMix,
) -> dict[str, np.ndarray]:
    """Training rows (``image``, ``mask``), each either synthesized (with the curriculum's noise)
    or a random window of a labelled training pair, drawn per sample from ``(seed, id)``. Labelled
    windows always get a flip / rotation; synthetic samples only with ``augment``."""
    from dotseg import labelled

    size = cfg.size
    images = np.empty((len(ids), size, size), np.float32)
    masks = np.empty((len(ids), size, size), np.uint8)
    probs = np.asarray(mix.weights) / sum(mix.weights)
    sources = [labelled.arrays(path) for path in mix.paths]  # read once per process (cached)
    training = [labelled.split(len(data), mix.holdout, mix.split_seed)[0] for _, data, _ in sources]
    real: list[int] = []
    for i, index in enumerate(ids):
        rng = np.random.default_rng([int(seed), int(index), _LABELLED_STREAM])
        if rng.random() >= mix.fraction:
            continue
        real.append(i)
        j = int(rng.choice(len(mix.paths), p=probs))
        _, data, truth = sources[j]
        k = int(training[j][rng.integers(len(training[j]))])
        images[i], masks[i] = labelled.window(data[k], truth[k], size, rng)
    synthetic = np.setdiff1d(np.arange(len(ids)), real).astype(np.int64)
    if len(synthetic):
        out = make_batch(cfg, seed, ids[synthetic], noise_scale=noise_scale, mixed_prob=mixed_prob)
        images[synthetic], masks[synthetic] = out["image"], out["mask"]
    rows: dict[str, np.ndarray] = {"image": images, "mask": masks}
    chosen = np.array(real if not augment else range(len(ids)), dtype=np.int64)
    if len(chosen):
        sub = {key: value[chosen] for key, value in rows.items()}
        dihedral(sub, seed, ids[chosen], ("image", "mask"))
        for key in rows:
            rows[key][chosen] = sub[key]
    if model_input:
        rows["image"] = normalize(rows["image"])
    return rows


def synthesis_dataset(
    cfg: SynthesisConfig,
    data: DataConfig,
    seed: int,
    count: int,
    offset: int = 0,
    noise_scale: float = 1.0,
    mixed_prob: float = 0.0,
    noisy: bool = True,
    columns: Sequence[str] | None = None,
    model_input: bool = False,
    augment: bool = False,
    priority: str = "normal",
    labelled: LabelledMix | None = None,
) -> Any:
    """A lazy ``ray.data.Dataset`` of samples ``offset .. offset + count - 1``.

    ``columns`` keeps only those keys of :func:`make_batch`'s output (e.g. ``("image", "mask")``
    for training, which saves moving metadata through the object store); ``clean`` among them adds
    each sample's noise-free copy. ``model_input`` applies :func:`dotseg.normalize.normalize` to the
    images in the synthesis tasks; ``augment`` flips / rotates each sample (:func:`dihedral`).
    ``labelled`` mixes users' labelled windows in (training only: columns ``image`` and ``mask``).
    """
    if labelled is not None and columns is not None and set(columns) - {"image", "mask"}:
        raise ValueError(f"labelled samples have only image and mask columns, not {sorted(set(columns))}")
    import ray.data

    blocks = max(1, math.ceil(count / data.rows_per_block))
    return ray.data.range(count, override_num_blocks=blocks).map_batches(
        _synthesize,
        batch_size=data.rows_per_block,
        batch_format="numpy",
        zero_copy_batch=True,
        fn_kwargs={
            "cfg": cfg,
            "seed": seed,
            "offset": offset,
            "noise_scale": noise_scale,
            "mixed_prob": mixed_prob,
            "noisy": noisy,
            "columns": tuple(columns) if columns is not None else None,
            "model_input": model_input,
            "augment": augment,
            "priority": priority,
            "labelled": labelled,
        },
        compute=ray.data.TaskPoolStrategy(size=data.synth_tasks),
        num_cpus=data.cpus_per_task,
    )


def validation_shard(
    cfg: SynthesisConfig,
    data: DataConfig,
    seed: int,
    count: int,
    *,
    rank: int,
    world: int,
    noise_scale: float,
    mixed_prob: float,
) -> Any | None:
    """This rank's share of the fixed validation set, synthesized once by Ray Data tasks and kept
    (``materialize``) in the object store for every epoch: columns ``image`` and ``clean`` (model
    input, noisy and noise-free), ``mask``, ``noise`` and ``snr_db``. Ranks hold contiguous slices
    of the ``count`` samples; None for a rank whose slice is empty."""
    start, stop = rank * count // world, (rank + 1) * count // world
    if stop <= start:
        return None
    return synthesis_dataset(
        cfg,
        data,
        seed,
        stop - start,
        offset=start,
        noise_scale=noise_scale,
        mixed_prob=mixed_prob,
        columns=("image", "clean", "mask", "noise", "snr_db"),
        model_input=True,
    ).materialize()
