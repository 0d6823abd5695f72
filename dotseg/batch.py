"""Batch inference at scale: a folder or a bucket prefix of images through an actor pool of
Predictors on Ray Data, with a manifest, and resumable after a kill.

    result = predict_at_scale(["s3://lab/scans/"], "s3://lab/masks/", BatchOptions(threads=2), actors=(1, 8))

This is what ``dotseg predict`` runs when the input or output is a bucket, when a cluster is given
(``--address``), or for more than :data:`AUTO_RAY_FILES` files (``--runner`` forces either way);
``dotseg submit predict`` runs it as a Ray job. The per-file work is the same as the
single-process path (:func:`dotseg.inference.files.predict_files`): read the file as ``dotseg
predict`` reads it, :meth:`Predictor.predict`, write ``<stem>_mask.png`` (and ``_prob.npy`` /
``_overlay.png``). On top of it:

* **Where the work runs.** ``ray.data.from_items`` of the file names, one block per batch of files,
  ``map_batches`` over an autoscaling pool of :class:`_PredictActor` (``ActorPoolStrategy(min_size,
  max_size)``), each holding one Predictor with ``threads`` torch threads and as many Ray CPUs (one
  GPU each with ``device=cuda``). Files are read and outputs written by the actors themselves, so
  the driver never holds images; the checkpoint travels to the actors through the object store
  when it is a local file (it may not exist on their nodes), by name or URI otherwise.
* **The manifest** (``manifest.csv`` and ``manifest.parquet`` in the output): one row per input
  with its status (``ok`` / ``failed`` and the one-line reason: a bad file is recorded, the run goes
  on), size, foreground fraction, mean confidence, estimated SNR, the in-distribution verdict and
  score (:func:`dotseg.inference.ood.describe`, the numbers ``/predict/json`` gives), seconds and
  the Ray node that did it.
* **Nothing done twice, nothing lost.** Each batch writes its outputs (atomically: a local file is
  replaced whole, an object is put whole), then its manifest rows as one part file named after its
  inputs (``.dotseg-manifest/part-<digest>.csv``). A batch retried after its actor was killed
  rewrites the same part, so an input appears once. A new run over the same output skips every
  input the manifest lists as ``ok`` whose mask is there (``--overwrite`` redoes all), retries the
  failed ones, and merges the parts into ``manifest.csv`` at the end.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dotseg import storage
from dotseg.inference.images import SUPPORTED_SUFFIXES, ImageError, list_images

#: ``--runner auto`` takes Ray Data above this many local files with no cluster given: Ray's and the
#: actors' start-up (~15 s on 2 cores) is then under ~5% of the run (benchmarks/predict.py), and the
#: manifest and resumption are worth it; below it, one process finishes first.
AUTO_RAY_FILES = 5000
MANIFEST = "manifest.csv"
MANIFEST_PARQUET = "manifest.parquet"
PARTS = ".dotseg-manifest"
#: Files per Ray Data batch, at most: the unit of retry and of resumption after a kill.
MAX_BATCH = 32
COLUMNS = (
    "input",
    "status",
    "error",
    "mask",
    "height",
    "width",
    "foreground_fraction",
    "mean_confidence",
    "snr_db_estimate",
    "in_distribution",
    "in_distribution_score",
    "seconds",
    "node",
)


class BatchError(ValueError):
    """A batch run that cannot start; the message says what to change."""


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How each file is predicted: the same knobs as a single-process ``dotseg predict``."""

    checkpoint: str | None = None
    """Path, bucket URI or shipped model name (None: the shipped model)."""
    threshold: float | None = None
    device: str = "cpu"
    threads: int = 1
    """Torch threads per actor, and the Ray CPUs each actor reserves."""
    engine: str = "auto"
    precision: str = "auto"
    prob: bool = False
    overlay: bool = False
    describe: bool = True
    """Estimate each image's SNR and check it is in distribution for the manifest (~16 ms an image
    at 512 px on one core, about as long as the forward pass with OpenVINO bf16); False leaves
    those columns empty and keeps the size, foreground fraction and confidence."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    total: int
    """Inputs found."""
    done: int
    """Inputs predicted by this run."""
    skipped: int
    """Inputs an earlier run had already done (the manifest says ok and the mask is there)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Inputs that could not be predicted in this run, with the one-line reason."""
    seconds: float = 0.0
    """Wall time of the predictions (Ray and the actors started)."""
    nodes: int = 0
    """Ray nodes the work ran on."""
    manifest: str = ""
    startup_s: float = 0.0
    """Of :attr:`seconds`, those until the first batch came back (Ray and the first actor starting)."""
    first_batch: int = 0
    """Images in that first batch."""

    @property
    def steady_rate(self) -> float:
        """Images/s once the pool was running (after the first batch); 0 if there is no such span."""
        span = self.seconds - self.startup_s
        return (self.done - self.first_batch) / span if span > 0 and self.done > self.first_batch else 0.0


# -- places: a local directory or a bucket prefix ------------------------------------------------


class Place:
    """A directory, or a bucket prefix (``s3://``, ``gs://``), read and written by file name."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location).rstrip("/") or "/"
        self.remote = storage.is_uri(self.location)

    def __str__(self) -> str:
        return self.location

    def join(self, name: str) -> str:
        return storage.join(self.location, name) if self.remote else str(Path(self.location) / name)

    def put(self, name: str, data: bytes) -> None:
        """Write ``name`` whole: an object put, or a local file replaced atomically."""
        target = self.join(name)
        if self.remote:
            fs, path = storage.filesystem(target)

            def write() -> None:
                with fs.open_output_stream(path) as f:
                    f.write(data)

            storage.call(target, "write to", write)
        else:
            from dotseg.files import write_atomic

            write_atomic(target, data)

    def get(self, name: str) -> bytes:
        return read_bytes(self.join(name))

    def exists(self, name: str) -> bool:
        target = self.join(name)
        return storage.exists(target) if self.remote else Path(target).is_file()

    def names(self, sub: str = "") -> list[str]:
        """Names of the files directly in this place (or in its folder ``sub``); [] if it does not exist."""
        where = self.join(sub) if sub else self.location
        if not self.remote:
            d = Path(where)
            return sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []
        import pyarrow.fs

        fs, path = storage.filesystem(where)
        selector = pyarrow.fs.FileSelector(path, recursive=False, allow_not_found=True)
        infos = storage.call(where, "list", fs.get_file_info, selector)
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.File)

    def delete(self, name: str) -> None:
        target = self.join(name)
        if self.remote:
            fs, path = storage.filesystem(target)
            storage.call(target, "delete", fs.delete_file, path)
        else:
            Path(target).unlink(missing_ok=True)


def read_bytes(location: str) -> bytes:
    """The bytes of a local file or an object."""
    if not storage.is_uri(location):
        return Path(location).read_bytes()
    fs, path = storage.filesystem(location)

    def read() -> bytes:
        with fs.open_input_stream(path) as f:
            return bytes(f.read())

    return bytes(storage.call(location, "read", read))


def list_inputs(inputs: list[str]) -> list[str]:
    """Files as given, directories and bucket prefixes expanded to their supported files (sorted,
    not recursive). Raises ImageError for a missing path or a folder without images."""
    out: list[str] = []
    for item in inputs:
        if not storage.is_uri(item):
            out += [str(p) for p in list_images([item])]
            continue
        if Path(item.split("?")[0]).suffix.lower() in SUPPORTED_SUFFIXES:
            if not storage.exists(item):
                raise ImageError(f"{item}: no such object")
            out.append(item)
            continue
        place = Place(item)
        found = [place.join(n) for n in place.names() if Path(n).suffix.lower() in SUPPORTED_SUFFIXES]
        if not found:
            raise ImageError(f"{item}: no {'/'.join(SUPPORTED_SUFFIXES)} files under this prefix")
        out += found
    return out


def stem(location: str) -> str:
    return Path(location.rstrip("/").rsplit("/", 1)[-1].split("?")[0]).stem


def outputs(location: str, options: BatchOptions) -> dict[str, str]:
    """Output kind -> file name, for one input (the names ``dotseg predict`` writes)."""
    s = stem(location)
    names = {"mask": f"{s}_mask.png"}
    if options.prob:
        names["prob"] = f"{s}_prob.npy"
    if options.overlay:
        names["overlay"] = f"{s}_overlay.png"
    return names


# -- the manifest --------------------------------------------------------------------------------


def part_name(inputs: list[str]) -> str:
    """The part file of one batch: named after its inputs, so a retried batch rewrites it."""
    digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:20]
    return f"part-{digest}.csv"


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def from_csv(data: bytes) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def read_manifest(out: Place) -> dict[str, dict[str, Any]]:
    """Input -> its latest row: ``manifest.csv``, then the part files of an unfinished run."""
    rows: dict[str, dict[str, Any]] = {}
    if out.exists(MANIFEST):
        rows.update((r["input"], r) for r in from_csv(out.get(MANIFEST)))
    for name in out.names(PARTS):
        if name.startswith("part-") and name.endswith(".csv"):
            rows.update((r["input"], r) for r in from_csv(out.get(f"{PARTS}/{name}")))
    return rows


def write_manifest(out: Place, rows: dict[str, dict[str, Any]]) -> str:
    """``manifest.csv`` (and ``manifest.parquet``) from ``rows``, sorted by input; then the part
    files it folded in are deleted (a kill in between leaves them: they say the same)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ordered = [rows[k] for k in sorted(rows)]
    parts = [n for n in out.names(PARTS) if n.startswith("part-")]
    out.put(MANIFEST, to_csv(ordered))
    table = pa.table({c: [_typed(c, r.get(c)) for r in ordered] for c in COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    out.put(MANIFEST_PARQUET, buf.getvalue())
    for name in parts:
        out.delete(f"{PARTS}/{name}")
    return out.join(MANIFEST)


_NUMBERS = {
    "height",
    "width",
    "foreground_fraction",
    "mean_confidence",
    "snr_db_estimate",
    "in_distribution_score",
    "seconds",
}


def _typed(column: str, value: Any) -> Any:
    """A CSV cell as the Parquet column's type (numbers as float, the verdict as bool, '' as null)."""
    if value in ("", None):
        return None
    if column in _NUMBERS:
        return float(value)
    if column == "in_distribution":
        return str(value) == "True" if isinstance(value, str) else bool(value)
    return str(value)


def still_done(rows: dict[str, dict[str, Any]], out: Place, inputs: list[str], options: BatchOptions) -> set[str]:
    """Inputs an earlier run finished: listed ``ok`` in the manifest, with their mask in ``out``."""
    present = set(out.names())
    return {i for i in inputs if rows.get(i, {}).get("status") == "ok" and outputs(i, options)["mask"] in present}


# -- the actors ------------------------------------------------------------------------------------


def predict_file(predictor: Any, location: str, out: Place, options: BatchOptions) -> dict[str, Any]:
    """Read, predict and write one input; its manifest row (a failure is a row, not an exception)."""
    from dotseg.inference.files import failure_line
    from dotseg.inference.images import decode_image, encode_npy, encode_png, overlay_rgb
    from dotseg.inference.ood import describe, mean_confidence

    t0 = time.perf_counter()
    names = outputs(location, options)
    row: dict[str, Any] = {"input": location, "mask": out.join(names["mask"])}
    try:
        image = decode_image(read_bytes(location), name=location)
        pred = predictor.predict(image)
        about = describe(image, pred.mask, pred.prob, predictor.synthesis) if options.describe else None
        out.put(names["mask"], encode_png(pred.mask))
        if options.prob:
            out.put(names["prob"], encode_npy(pred.prob.astype(np.float32)))
        if options.overlay:
            out.put(names["overlay"], encode_png(overlay_rgb(image, pred.mask)))
    except (ValueError, OSError, MemoryError) as e:  # one bad file (ImageError, StorageError) must not stop the others
        row.update(status="failed", error=failure_line(location, e))
    else:
        row.update(
            status="ok",
            error="",
            height=int(image.shape[0]),
            width=int(image.shape[1]),
            foreground_fraction=round(float(pred.mask.mean()), 6),
            mean_confidence=round(mean_confidence(pred.mask, pred.prob), 6),
        )
        if about is not None:
            snr = about.snr_db_estimate
            row.update(
                snr_db_estimate=round(snr, 3) if math.isfinite(snr) else "",
                in_distribution=about.check.in_distribution,
                in_distribution_score=f"{about.check.score:.4g}",
            )
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


class _PredictActor:
    """One Predictor in a Ray Data actor: files in, outputs and a manifest part written, rows out."""

    def __init__(self, options: BatchOptions, out: str, checkpoint_ref: list[Any], checkpoint_name: str) -> None:
        import ray

        from dotseg.inference.predictor import Predictor

        checkpoint = options.checkpoint
        if checkpoint_ref:  # a driver-local file: materialized once per node, by content
            checkpoint = str(_materialize(ray.get(checkpoint_ref[0]), checkpoint_name))
        self.predictor = Predictor.from_checkpoint(
            checkpoint,
            device=options.device,
            threads=options.threads,
            threshold=options.threshold,
            engine=options.engine,
            precision=options.precision,
        )
        self.options = options
        self.out = Place(out)
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [str(x) for x in batch["input"]]
        rows = [predict_file(self.predictor, i, self.out, self.options) | {"node": self.node} for i in inputs]
        self.out.put(f"{PARTS}/{part_name(inputs)}", to_csv(rows))  # after the outputs: a row means they are there
        return {c: np.array([str(r.get(c, "")) for r in rows], dtype=object) for c in COLUMNS}


def _materialize(data: bytes, name: str) -> Path:
    from dotseg.files import write_atomic

    digest = hashlib.sha256(data).hexdigest()[:16]
    path = storage.CACHE_DIR / "files" / f"checkpoint-{digest}" / name
    if not path.is_file() or path.stat().st_size != len(data):
        write_atomic(path, data)
    return path


# -- the driver ------------------------------------------------------------------------------------


def remote(inputs: list[str], output: str, address: str | None) -> bool:
    """Whether the run involves a cluster or a bucket, which only the Ray runner serves."""
    return bool(address) or storage.is_uri(output) or any(storage.is_uri(i) for i in inputs)


def use_ray(runner: str, inputs: list[str], output: str, address: str | None, n_files: int | None = None) -> bool:
    """Whether ``dotseg predict`` runs on Ray Data (``runner`` auto/local/ray); ``n_files`` is the
    local file count when known."""
    if runner != "auto":
        return runner == "ray"
    return remote(inputs, output, address) or (n_files is not None and n_files > AUTO_RAY_FILES)


def predict_at_scale(
    inputs: list[str],
    output: str,
    options: BatchOptions,
    *,
    address: str | None = None,
    actors: tuple[int, int] = (1, 1),
    overwrite: bool = False,
    progress: bool = True,
) -> BatchResult:
    """Predict every image of ``inputs`` (files, folders, bucket prefixes) into ``output`` on Ray Data.

    Raises:
        ImageError: an input that does not exist, or two inputs that would write the same outputs.
        BatchError: an output that is a file, or an actor pool that does not fit the cluster.
        CheckpointError / StorageError: an unusable checkpoint, or a bucket that cannot be reached.
    """
    import ray.data
    from tqdm import tqdm

    from dotseg.checkpoint import read_meta
    from dotseg.inference.files import stem_clashes
    from dotseg.inference.predictor import resolve_checkpoint

    files = list_inputs(inputs)
    clashes = stem_clashes([Path(f.rsplit("/", 1)[-1]) for f in files])
    if clashes:
        raise ImageError(f"inputs would write the same outputs: {clashes} (rename one or predict them separately)")
    out = Place(output)
    if out.remote:
        storage.check_writable(out.location)
    elif Path(out.location).exists() and not Path(out.location).is_dir():
        raise BatchError(f"{out}: exists and is not a directory")
    else:
        Path(out.location).mkdir(parents=True, exist_ok=True)
    rows = read_manifest(out)
    done = set() if overwrite else still_done(rows, out, files, options)
    todo = [f for f in files if f not in done]
    resolved = resolve_checkpoint(options.checkpoint)
    read_meta(resolved)  # a bad checkpoint fails here, in one line, before Ray starts
    if not todo:
        return BatchResult(len(files), 0, len(done), manifest=write_manifest(out, rows) if rows else "")

    # A file on this machine may not exist on the actors' nodes: it travels in the object store.
    # Shipped models (in every node's package) and bucket URIs go by name.
    named = options.checkpoint is None or storage.is_uri(str(resolved)) or str(resolved) != str(options.checkpoint)
    low, high = actors
    t0 = time.perf_counter()
    cpus = _start_ray(address, options, low, files, out)
    # Put by the driver, which holds the ref for the whole run, and handed over nested (not as a
    # constructor argument in the object store): a restarted actor must still find it (ray#53727).
    checkpoint_ref = [] if named else [ray.put(Path(resolved).read_bytes())]
    if progress:
        tqdm.write(
            f"[dotseg] Ray Data: {len(todo)} of {len(files)} images to predict"
            + (f" ({len(done)} already done)" if done else "")
            + f"; {low if low == high else f'{low}-{high}'} actor(s) x {options.threads} thread(s),"
            f" {cpus} CPUs in the cluster"
        )
    batch = max(1, min(MAX_BATCH, len(todo) // (4 * high)))  # >= 4 batches an actor: an even spread
    ds = ray.data.from_items([{"input": f} for f in todo], override_num_blocks=math.ceil(len(todo) / batch))
    gpu = options.device.startswith("cuda")
    mapped = ds.map_batches(
        _PredictActor,
        fn_constructor_kwargs={
            "options": options,
            "out": out.location,
            "checkpoint_ref": checkpoint_ref,
            "checkpoint_name": Path(str(resolved)).name,
        },
        batch_size=batch,
        batch_format="numpy",
        num_cpus=0 if gpu else options.threads,
        num_gpus=1 if gpu else 0,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
    )
    failed: dict[str, str] = {}
    nodes: set[str] = set()
    startup_s, first_batch = 0.0, 0
    bar = tqdm(total=len(todo), desc="predict", unit="image", disable=not progress, smoothing=0.1)
    for got in mapped.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
        for i, status, error, node in zip(got["input"], got["status"], got["error"], got["node"], strict=True):
            nodes.add(str(node))
            if status != "ok":
                failed[str(i)] = str(error)
                tqdm.write(f"dotseg predict: {error}", file=sys.stderr)
        if not startup_s:
            startup_s, first_batch = time.perf_counter() - t0, len(got["input"])
        bar.update(len(got["input"]))
    bar.close()
    seconds = time.perf_counter() - t0
    manifest = write_manifest(out, read_manifest(out))
    return BatchResult(
        len(files), len(todo) - len(failed), len(done), failed, seconds, len(nodes), manifest, startup_s, first_batch
    )


def _start_ray(address: str | None, options: BatchOptions, min_actors: int, files: list[str], output: Place) -> int:
    """Join (or start) Ray and check the pool fits; returns the cluster's CPUs."""
    from dotseg.runtime import init_ray

    resources = init_ray(address)
    cpus = int(resources.get("CPU", 0))
    if options.device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if gpus < min_actors:
            raise BatchError(
                f"--device cuda takes one GPU per actor and the Ray cluster has {gpus}; "
                f"pass --actors {max(gpus, 1)} or fewer, or drop --device"
            )
    elif options.threads * min_actors > cpus:
        # Ray Data would wait for the pool's first actors forever.
        raise BatchError(
            f"{min_actors} actor(s) x --threads {options.threads} need {min_actors * options.threads} CPUs and the "
            f"Ray cluster has {cpus}; pass fewer --threads or a smaller minimum in --actors"
        )
    hosts = storage.cluster_hosts()
    lost = "actors on the other machines could not read or write it"
    for where, what in ((next((f for f in files if not storage.is_uri(f)), None), "--input"), (output, "--output")):
        if where is not None and not storage.is_uri(str(where)):
            storage.check_shared_storage(str(where), hosts, what=what, lost=lost)
    return cpus


def default_threads() -> int:
    """Torch threads per actor when none are given: all of a small machine's cores in one actor,
    up to 4 (beyond that, more actors scale better than more threads per convolution)."""
    return max(1, min(4, os.cpu_count() or 1))
