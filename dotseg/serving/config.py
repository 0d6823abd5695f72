"""Configuration of the Ray Serve application: what is served, how it scales, and its HTTP limits.

The same object is the Serve app builder's typed arguments (``serve_app:build``) and is read by the
FastAPI ingress, so ``configs/serve.yaml``, ``dotseg serve --set serve.x=y`` and the app agree.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from dotseg.configbase import NonNegInt, PositiveInt, Section, check


class ServeConfig(Section):
    checkpoint: str | None = None
    """Checkpoint to serve; null = the model shipped with the package. Changing it on a running app
    rolls the new model out to every replica (``reconfigure``); one that fails to load is refused
    and the old model keeps serving."""
    engine: Literal["auto", "eager", "openvino", "onnxruntime"] = "auto"
    """CPU inference engine of the replicas' Predictor: ``auto`` = the fastest installed (see the README's
    engine benchmark), else eager PyTorch."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Arithmetic of the replicas' forward pass: ``auto`` = the fastest reduced precision that passed the
    precision gate for this model on the replica's CPU (``dotseg evaluate --gate``), else fp32;
    ``fp32`` = exact; ``bf16`` = refused unless it passed there."""
    ingress: Literal["auto", "proxy", "haproxy"] = "auto"
    """HTTP ingress: HAProxy forwarding straight to the replicas (``RAY_SERVE_ENABLE_HA_PROXY``; Ray
    bundles the binary; the faster, see the README's serving A/B) or Serve's Python proxy. It is
    chosen when Ray starts: ``auto`` = HAProxy on a Ray that dotseg starts itself, else whatever the
    running Ray uses; ``proxy``/``haproxy`` are refused in one line where the running Ray uses the
    other. On a cluster, set that variable on the nodes."""
    host: str = Field("127.0.0.1", min_length=1)
    """Interface the HTTP proxy binds; use 0.0.0.0 only behind a firewall or proxy you control."""
    port: int = Field(8000, ge=1, le=65535)
    """HTTP port."""
    route_prefix: str = Field("/", pattern=r"^/")
    """Route of the application."""
    min_replicas: NonNegInt = 1
    """Autoscaling floor."""
    max_replicas: PositiveInt = 2
    """Autoscaling ceiling."""
    target_ongoing_requests: float = Field(4.0, gt=0.0)
    """Autoscaler's target of in-flight requests per replica."""
    upscale_delay_s: float = Field(3.0, ge=0.0)
    """How long load must stay above target before a replica is added."""
    downscale_delay_s: float = Field(30.0, ge=0.0)
    """How long load must stay below target before a replica is removed (long enough not to flap)."""
    max_ongoing_requests: PositiveInt = 16
    """Per-replica cap of in-flight requests; at least ``max_batch_size``, or batches never fill."""
    max_queued_requests: int = Field(64, ge=-1)
    """Requests waiting for a replica, per proxy; beyond it a fast 503 with Retry-After (-1 = unbounded)."""
    cpus_per_replica: float = Field(1.0, gt=0.0)
    """Logical CPUs per replica (also its torch threads, rounded down, at least 1)."""
    max_batch_size: int = Field(8, ge=1, le=1024)
    """Largest batch ``@serve.batch`` forms."""
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=10.0)
    """How long a batch waits to fill. 0 (default) = adaptive: a lone request goes at once, and the
    requests that queued during a forward pass go together as the next batch (benchmarks/serve.py
    --ab: -10 to -15 ms p50 at concurrency 1, equal or better at 16, against 10 ms)."""
    max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest accepted request body (413 above, refused from Content-Length before reading)."""
    max_pixels: int = Field(4096 * 4096, ge=64)
    """Largest accepted image, in pixels (413 above; checked from the file header before decoding)."""
    request_timeout_s: float = Field(60.0, gt=0.0)
    """Requests slower than this get HTTP 408."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (CORS), e.g. ["https://app.example"]; credentials
    are never allowed. The dashboard is served by the app itself and needs none."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check(
            self.min_replicas <= self.max_replicas,
            "min_replicas",
            f"must be <= max_replicas ({self.max_replicas}), got {self.min_replicas}",
        )
        # ray#43288: a replica never holds more than max_ongoing_requests, so a larger batch never fills.
        check(
            self.max_ongoing_requests >= self.max_batch_size,
            "max_ongoing_requests",
            f"must be >= max_batch_size ({self.max_batch_size}) or batches never fill, got {self.max_ongoing_requests}",
        )
        check("*" not in self.cors_origins or len(self.cors_origins) == 1, "cors_origins", "'*' must stand alone")
        return self
