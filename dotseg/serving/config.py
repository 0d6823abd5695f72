"""Configuration of the Ray Serve deployment and its HTTP front."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from dotseg.configbase import NonNegInt, PositiveInt, Section, check


class ServeConfig(Section):
    checkpoint: str | None = None
    """Checkpoint to serve; null = the model shipped with the package."""
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
    target_ongoing_requests: float = Field(2.0, gt=0.0)
    """Autoscaler's target of in-flight requests per replica."""
    max_ongoing_requests: PositiveInt = 8
    """Per-replica cap of in-flight requests."""
    cpus_per_replica: float = Field(1.0, gt=0.0)
    """Logical CPUs per replica (also its torch threads, rounded down, at least 1)."""
    max_batch_size: int = Field(8, ge=1, le=1024)
    """Largest batch ``@serve.batch`` forms."""
    batch_wait_timeout_s: float = Field(0.02, ge=0.0, le=10.0)
    """How long a batch waits to fill."""
    max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest accepted request body (413 above)."""
    max_pixels: int = Field(4096 * 4096, ge=64)
    """Largest accepted image, in pixels (413 above)."""
    request_timeout_s: float = Field(60.0, gt=0.0)
    """Requests slower than this get HTTP 408."""

    @model_validator(mode="after")
    def _replicas(self) -> Self:
        check(
            self.min_replicas <= self.max_replicas,
            "min_replicas",
            f"must be <= max_replicas ({self.max_replicas}), got {self.min_replicas}",
        )
        return self
