"""The Ray Serve application: one deployment that wraps the Predictor behind a FastAPI ingress.

    from dotseg.serving.app import build
    serve.run(build({"checkpoint": None, "max_replicas": 4}), route_prefix="/")

Replicas batch concurrent requests (``@serve.batch``) into one forward pass, scale with load
(autoscaling on in-flight requests), and report unhealthy when a tiny known prediction fails
(``check_health``). The checkpoint travels in ``user_config`` and is loaded by ``reconfigure``:

* ``dotseg.serving.run.roll_out`` (``serve.run`` with a new checkpoint) first runs the warm-up in
  its own process and refuses a model that fails it; then, as the deployment's version (dotseg's
  code and the settings a replica is built from, :func:`replica_version`) is unchanged, Serve calls
  ``reconfigure`` on the running replicas: each loads and warms up the new model off its event loop
  and swaps only then, so no request fails and no capacity is lost; one that fails keeps its old
  model and ``/ready`` reports the ``rollout_error``;
* a change to what replicas are built from (engine, precision, CPUs, limits, a new dotseg) starts
  new replicas instead; replicas that cannot start leave the old ones serving, and ``roll_out``
  says why.

Every error a client can cause is a JSON body ``{"status": ..., "error": "<problem and fix>"}``
with a 4xx status, never a 5xx, a hang or a dead replica (see :mod:`dotseg.serving.http`).
"""

# No `from __future__ import annotations` here: Serve ships this class to its replicas by value,
# and FastAPI must see real annotation objects (Request, Query) on the endpoint methods.

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from ray import serve

from dotseg.inference.images import encode_png
from dotseg.serving import http
from dotseg.serving.config import ServeConfig
from dotseg.synthesis.config import SynthesisConfig
from dotseg.synthesis.noise import ORDER as NOISE_ORDER

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: The known sample every replica predicts before it reports ready, and in every health check.
WARMUP_SEED, WARMUP_SIZE = 12345, 64


def _replica_limits() -> http.Limits:
    """This replica's limits, read from the replica itself: Serve runs a copy of ``api`` (its ingress
    pickles the app), so nothing set on the module's object would reach the app that serves."""
    from ray import serve

    replica: Segmenter = serve.get_replica_context().servable_object  # type: ignore[assignment]
    return replica.limits


api = FastAPI(
    title="dotseg",
    description="Delineate organic shapes drawn only as dots, under heavy noise. Bad input gets a JSON error "
    "naming the problem and the fix.",
    version="1",
)
http.install(api, limits=_replica_limits)
if STATIC.is_dir():
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

#: The demo's noise choices: the synthesis noise types (alphabetical, as the dashboard lists them).
NOISES = ("none", *sorted(NOISE_ORDER), "mixed")


def _warmup(predictor: Any) -> None:
    """Predict the known sample and check the answer is a real mask (not blank, not everything)."""
    from dotseg.inference.ood import in_distribution
    from dotseg.synthesis import make_sample

    sample = make_sample(predictor.synthesis.replace(size=WARMUP_SIZE), WARMUP_SEED, 0, noisy=False)
    pred = predictor.predict(sample.image)
    in_distribution(sample.image, predictor.synthesis)  # builds the upload check's reference now, not on a request
    if not (0.0 < pred.mask.mean() < 0.9) or not np.isfinite(pred.prob).all():
        raise RuntimeError(f"warm-up prediction failed: foreground fraction {pred.mask.mean():.3f} on a known sample")


def load_warm(checkpoint: str | None, cfg: ServeConfig, threads: int | None = None) -> Any:
    """A Predictor for ``checkpoint`` on the replicas' engine and precision that has passed the
    warm-up prediction (a replica's load, and ``roll_out``'s check before it)."""
    from dotseg.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, threads=threads, engine=cfg.engine, precision=cfg.precision)
    _warmup(predictor)
    return predictor


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@serve.deployment(name="Segmenter", health_check_period_s=5, health_check_timeout_s=30, graceful_shutdown_timeout_s=5)
@serve.ingress(api)
class Segmenter:
    """One replica: a Predictor (threads = its CPUs), batching, health, rollouts."""

    def __init__(self, config: dict[str, Any]) -> None:
        from dotseg.runtime import replica_grpc_on_loopback

        replica_grpc_on_loopback()  # before Serve starts this replica's gRPC server (after __init__)
        self.cfg = ServeConfig.from_dict(config)
        self.threads = max(1, int(self.cfg.cpus_per_replica))
        self.predictor: Any = None
        self.rollout_error: str | None = None
        # One caller of the Predictor at a time: the batch thread and the health check would
        # otherwise share an engine's infer requests and shape cache from two threads.
        self.predictor_lock = threading.Lock()
        self.limits = http.Limits.of(self.cfg)  # what this replica's copy of the app enforces
        self.predict_batch.set_max_batch_size(self.cfg.max_batch_size)  # type: ignore[attr-defined]  # @serve.batch
        self.predict_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)  # type: ignore[attr-defined]
        # The model comes with reconfigure (user_config), which Serve calls right after __init__:
        # then changing the checkpoint later is an in-place rollout, not a replica restart.

    # -- models ---------------------------------------------------------------------------------

    def _load(self, checkpoint: str | None) -> Any:
        return load_warm(checkpoint, self.cfg, self.threads)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Roll out ``{"checkpoint": path, "model_id": id}``: load and warm up, then swap; on failure
        keep the old model. The same path with another model id (a file replaced) rolls out too.
        The load runs off the event loop: a running replica keeps answering while it loads."""
        checkpoint = user_config.get("checkpoint")
        if self.predictor is None:  # the replica's first model: without it there is nothing to serve
            self.predictor = await asyncio.to_thread(self._load, checkpoint)
            self.cfg = self.cfg.replace(checkpoint=checkpoint)
            return
        served = self.predictor.checkpoint.model_id if self.predictor.checkpoint is not None else None
        if checkpoint == self.cfg.checkpoint and user_config.get("model_id") in (None, served):
            return  # the same file with the same model: nothing to roll out
        t0 = time.monotonic()
        try:
            new = await asyncio.to_thread(self._load, checkpoint)
        except Exception as e:  # CheckpointError, a failed warm-up: the old model keeps serving
            self.rollout_error = f"checkpoint {checkpoint!r} was not rolled out: {' '.join(str(e).split())}"
            log.error(self.rollout_error)
            return
        self.predictor, self.rollout_error = new, None
        self.cfg = self.cfg.replace(checkpoint=checkpoint)
        log.info(
            "rolled out %s (model %s) in %.1f s",
            checkpoint or "the shipped model",
            new.checkpoint.model_id if new.checkpoint is not None else "?",
            time.monotonic() - t0,
        )

    def check_health(self) -> None:
        """Serve replaces a replica whose model no longer predicts the known sample."""
        if self.predictor is None:
            raise RuntimeError("no model loaded")
        with self.predictor_lock:
            _warmup(self.predictor)

    def model_info(self) -> dict[str, Any]:
        p = self.predictor
        about = p.checkpoint.about() if p.checkpoint is not None else {}
        if self.cfg.checkpoint is None:
            about["checkpoint"] = "shipped model"
        return {
            **about,
            "threshold": p.threshold,
            "input_size": p.contract.input_size,
            "engine": p.engine,
            "precision": p.precision,
            "threads": self.threads,
        }

    # -- batching -------------------------------------------------------------------------------

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def predict_batch(self, images: list[np.ndarray]) -> list[Any]:
        """Concurrent requests -> one forward pass per image size (the Predictor groups them)."""
        # In a thread: the replica's event loop keeps decoding and encoding other requests meanwhile
        # (measured: 24.8 instead of 18.4 requests/s at 16 clients on 2 cores). One batch runs at a
        # time (@serve.batch's default); the lock keeps the health check out while it does.
        return await asyncio.to_thread(self._predict_locked, images)

    def _predict_locked(self, images: list[np.ndarray]) -> list[Any]:
        with self.predictor_lock:
            return self.predictor.predict_batch(images, self.cfg.max_batch_size)

    async def _predict(self, image: np.ndarray) -> tuple[Any, dict[str, float]]:
        t0 = time.perf_counter()
        pred = await self.predict_batch(image)
        return pred, {"inference_ms": round((time.perf_counter() - t0) * 1000, 2)}

    # -- HTTP -----------------------------------------------------------------------------------

    @api.get("/health", summary="Liveness: the replica answers")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready", summary="Readiness: a model is loaded and passed its warm-up prediction")
    async def ready(self) -> JSONResponse:
        if self.predictor is None:
            return JSONResponse({"status": 503, "error": "model not loaded yet; retry shortly"}, status_code=503)
        body: dict[str, Any] = {"status": "ready", "model": self.model_info()}
        if self.rollout_error:
            body["rollout_error"] = self.rollout_error
        return JSONResponse(body)

    @api.get("/", include_in_schema=False)
    async def dashboard(self) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @api.get("/demo", summary="Synthesize a sample, predict it, score it")
    async def demo(
        self,
        num_dots: int = Query(40, ge=5, le=400, description="Dots drawn inside the shape."),
        jitter: float = Query(0.03, ge=0.0, le=0.2, description="Lattice jitter (fraction of the side)."),
        noise: str = Query("gaussian", description=f"One of {', '.join(NOISES)}."),
        level: float = Query(0.5, ge=0.0, le=1.0, description="Noise severity: 0 mildest, 1 harshest."),
        placement: str = Query("random", description="random or lattice."),
        seed: int = Query(0, ge=0, le=2**31 - 1, description="Sample seed."),
        size: int = Query(256, ge=64, le=1024, description="Image side in px."),
    ) -> dict[str, Any]:
        if noise not in NOISES:
            raise http.ClientError(422, f"noise: must be one of {', '.join(NOISES)}; got {noise!r}")
        if placement not in ("random", "lattice"):
            raise http.ClientError(422, f"placement: must be random or lattice; got {placement!r}")
        from dotseg.metrics import segmentation_metrics
        from dotseg.synthesis import make_sample
        from dotseg.synthesis.noise import ORDER

        # The benchmark's generator (the seed's, as `dotseg evaluate` uses), whatever the model trained
        # on: the knobs above are the seed's, and a wider training generator would override them
        # for some samples (model v2 renders half its samples with the seed's exact settings).
        synth = SynthesisConfig(size=size).replace(
            **{"dots.count": (num_dots, num_dots), "dots.jitter": jitter, "dots.placement": (placement,)}
        )
        types = None if noise in ("none", "mixed") else (noise,)
        if noise == "mixed":
            types = tuple(np.random.default_rng(seed).choice(ORDER, size=2, replace=False))
        sample = await asyncio.to_thread(
            make_sample, synth, seed, 0, noisy=noise != "none", noise_types=types, severity=level
        )
        pred, timings = await self._predict(sample.image)
        truth = sample.mask.astype(bool)
        m = await asyncio.to_thread(segmentation_metrics, pred.mask, truth)
        images = await asyncio.to_thread(http.pictures, sample.image, pred, truth)
        return {
            "dice": m["dice"],
            "iou": m["iou"],
            "snr_db": _finite(sample.snr_db),
            "noise": sample.meta["noise"],
            "placement": sample.meta["placement"],
            "num_dots": int(sample.meta["n_dots"]),
            "size": size,
            **images,
            "model": self.model_info(),
            "timings": timings,
        }

    @api.post(
        "/predict",
        summary="An image file (PNG, 8/16-bit TIFF, NPY) -> its mask as a PNG",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def predict(self, request: Request) -> Response:
        image = await http.read_upload(request, self.cfg)
        pred, _ = await self._predict(image)
        return Response(await asyncio.to_thread(encode_png, pred.mask), media_type="image/png")

    @api.post("/predict/json", summary="An image file -> mask, probabilities, confidence and whether to trust it")
    async def predict_json(
        self,
        request: Request,
        display: int = Query(1024, ge=64, le=4096, description="Longest side (px) of the returned pictures."),
    ) -> dict[str, Any]:
        from dotseg.inference.ood import describe

        t0 = time.perf_counter()
        image = await http.read_upload(request, self.cfg)
        decoded = time.perf_counter()
        pred, timings = await self._predict(image)

        def work() -> tuple[Any, dict[str, str]]:  # CPU work, off the event loop
            about = describe(image, pred.mask, pred.prob, self.predictor.synthesis)
            return about, http.pictures(image, pred, display=display)

        about, images = await asyncio.to_thread(work)
        ood = about.check
        return {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "foreground_fraction": about.foreground_fraction,
            "mean_confidence": about.mean_confidence,
            "snr_db_estimate": _finite(about.snr_db_estimate),
            "in_distribution": {"score": ood.score, "ok": ood.in_distribution, "reason": ood.reason},
            **images,
            "model": self.model_info(),
            "timings": {
                "decode_ms": round((decoded - t0) * 1000, 2),
                **timings,
                "total_ms": round((time.perf_counter() - t0) * 1000, 2),
            },
        }


def _model_id(checkpoint: str | None) -> str | None:
    """The model id of the file ``checkpoint`` names now (None if it cannot be read here: the
    replicas then report why)."""
    from dotseg.checkpoint import CheckpointError, read_meta
    from dotseg.inference.predictor import resolve_checkpoint

    try:
        return read_meta(resolve_checkpoint(checkpoint)).model_id
    except (CheckpointError, OSError, ValueError):
        return None


def build(args: dict[str, Any]) -> serve.Application:
    """The Serve application builder (``import_path: serve_app:build``): ``args`` is a ServeConfig
    section, checked (unknown keys, types and ranges fail with the key's name)."""
    cfg = ServeConfig.from_dict(dict(args or {}))
    deployment = Segmenter.options(  # type: ignore[attr-defined]  # @serve.deployment makes it a Deployment
        autoscaling_config={
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "initial_replicas": max(cfg.min_replicas, 1),
            "target_ongoing_requests": cfg.target_ongoing_requests,
            "upscale_delay_s": cfg.upscale_delay_s,
            "downscale_delay_s": cfg.downscale_delay_s,
            "metrics_interval_s": 1.0,
            "look_back_period_s": 5.0,
        },
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        backpressure_config={"status_code": 503, "retry_after_s": 1},
        ray_actor_options={"num_cpus": cfg.cpus_per_replica},
        # The model id too: re-promoting a new model to the path being served changes user_config,
        # so Serve reconfigures the running replicas instead of leaving them on the old file.
        user_config={"checkpoint": cfg.checkpoint, "model_id": _model_id(cfg.checkpoint)},
        max_constructor_retry_count=3,  # a checkpoint that cannot start a replica fails fast
    )
    # Serve gives a deployment without a version a random one on every `serve.run`, so each rollout
    # restarted every replica (stopping an old one before its replacement was up). With the version
    # of what the replicas are built from, a new checkpoint is an in-place `reconfigure`.
    deployment = deployment.options(version=replica_version(cfg), _internal=True)
    return deployment.bind(cfg.replace(checkpoint=None).to_dict())  # the checkpoint travels in user_config only


#: ServeConfig keys a replica never reads: Serve applies them itself (autoscaling, queueing) or they
#: belong to the HTTP ingress, so changing them restarts no replica. Every other key does.
NOT_IN_REPLICA = frozenset(
    {
        "checkpoint",  # user_config: reconfigure
        "min_replicas",
        "max_replicas",
        "target_ongoing_requests",
        "upscale_delay_s",
        "downscale_delay_s",
        "max_ongoing_requests",
        "max_queued_requests",
        "host",
        "port",
        "route_prefix",
        "ingress",
    }
)


def replica_version(cfg: ServeConfig) -> str:
    """The deployment version: dotseg's code and the settings a replica is built from. Equal
    versions let Serve update running replicas in place; any change in either restarts them."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):  # the dotseg package
        digest.update(path.read_bytes())
    settings = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IN_REPLICA}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
