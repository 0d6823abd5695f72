"""Configuration of the Ray Serve deployment and its HTTP front."""

from __future__ import annotations

from dataclasses import dataclass

from dotseg.configbase import check, check_range


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeConfig:
    checkpoint: str | None = None
    """Checkpoint to serve; null = the model shipped with the package."""
    host: str = "127.0.0.1"
    """Interface the HTTP proxy binds; use 0.0.0.0 only behind a firewall or proxy you control."""
    port: int = 8000
    """HTTP port."""
    route_prefix: str = "/"
    """Route of the application."""
    min_replicas: int = 1
    """Autoscaling floor."""
    max_replicas: int = 2
    """Autoscaling ceiling."""
    target_ongoing_requests: float = 2.0
    """Autoscaler's target of in-flight requests per replica."""
    max_ongoing_requests: int = 8
    """Per-replica cap of in-flight requests."""
    cpus_per_replica: float = 1.0
    """Logical CPUs per replica (also its torch threads, rounded down, at least 1)."""
    max_batch_size: int = 8
    """Largest batch ``@serve.batch`` forms."""
    batch_wait_timeout_s: float = 0.02
    """How long a batch waits to fill."""
    max_upload_bytes: int = 16 * 1024 * 1024
    """Largest accepted request body (413 above)."""
    max_pixels: int = 4096 * 4096
    """Largest accepted image, in pixels (413 above)."""
    request_timeout_s: float = 60.0
    """Requests slower than this get HTTP 408."""

    def __post_init__(self) -> None:
        check(bool(self.host), "host", "must not be empty")
        check_range(self.port, "port", 1, 65535)
        check(self.route_prefix.startswith("/"), "route_prefix", f"must start with '/', got {self.route_prefix!r}")
        check_range(self.min_replicas, "min_replicas", 0)
        check_range(self.max_replicas, "max_replicas", 1)
        check(self.min_replicas <= self.max_replicas, "min_replicas",
              f"must be <= max_replicas ({self.max_replicas}), got {self.min_replicas}")
        check_range(self.target_ongoing_requests, "target_ongoing_requests", 0.0, lo_open=True)
        check_range(self.max_ongoing_requests, "max_ongoing_requests", 1)
        check_range(self.cpus_per_replica, "cpus_per_replica", 0.0, lo_open=True)
        check_range(self.max_batch_size, "max_batch_size", 1, 1024)
        check_range(self.batch_wait_timeout_s, "batch_wait_timeout_s", 0.0, 10.0)
        check_range(self.max_upload_bytes, "max_upload_bytes", 1024)
        check_range(self.max_pixels, "max_pixels", 64)
        check_range(self.request_timeout_s, "request_timeout_s", 0.0, lo_open=True)
