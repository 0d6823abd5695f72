"""The HTTP edge of the app: request limits, decoding uploads, errors as JSON, CORS, PNG payloads.

Every problem a client can cause ends here as ``{"status": <4xx>, "error": "<what and how to fix>"}``:

=====  =============================================================================================
408    longer than ``serve.request_timeout_s`` (whatever ``x-request-timeout-seconds`` asks for)
413    body over ``serve.max_upload_bytes`` (refused from Content-Length before the body is read, and
       counted as it streams: chunked, raw or multipart bodies are cut off at the cap),
       too many pixels or a decompression bomb (checked from the image header before decoding)
415    a format dotseg does not read (JPEG, GIF, BMP, WebP, ...)
422    not an image, corrupt or truncated, a 3-D stack, NaN/inf, an empty body, a multipart body
       without its ``file`` field, out-of-range or ill-typed query parameters
=====  =============================================================================================
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dotseg.inference.images import encode_png
from dotseg.serving.config import ServeConfig

#: The multipart field that carries the file.
FIELD = "file"


@dataclass(frozen=True, slots=True)
class Limits:
    """What the edge enforces, from the serve config."""

    max_body: int
    """Body cap in bytes (``serve.max_upload_bytes``)."""
    request_timeout_s: float | None
    """Longest a request may take (``serve.request_timeout_s``). Serve's proxy lets a client lift
    its own timeout with ``x-request-timeout-seconds: 0``; this one it cannot."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call from a browser (``serve.cors_origins``); credentials never."""

    @classmethod
    def of(cls, cfg: ServeConfig) -> Limits:
        return cls(cfg.max_upload_bytes, cfg.request_timeout_s, tuple(cfg.cors_origins))


class ClientError(Exception):
    """A request the client can fix: its status (4xx) and one line saying what and how."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(ClientError):
    """Raised from the request's body stream once it passes ``serve.max_upload_bytes``."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "error": message}, status_code=status, headers=headers)


def install(app: FastAPI, limits: Callable[[], Limits]) -> None:
    """Error handlers, the body-size guard, the request timeout and CORS on ``app``, enforcing the
    :class:`Limits` that ``limits()`` gives, asked once per app instance at its first request (a
    Serve replica runs its own copy of the app, and answers with its own config)."""

    @app.exception_handler(ClientError)
    async def _client(_: Request, e: ClientError) -> JSONResponse:
        return error(e.status, str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        bounds = " and ".join(f"{ops[k]} {v}" for k, v in (first.get("ctx") or {}).items() if k in ops)
        problem = f"must be {bounds}" if bounds else first["msg"][0].lower() + first["msg"][1:]
        return error(422, f"{name}: {problem}, got {first.get('input')!r}")

    app.add_middleware(_Guard, limits=limits)


class _Guard:
    """ASGI middleware: a 413 from Content-Length before the body is read or as it streams, the
    request timeout, CORS."""

    def __init__(self, app: ASGIApp, limits: Callable[[], Limits]) -> None:
        self.app = app
        self.limits_of = limits
        self.limits: Limits | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.limits is None:
            self.limits = self.limits_of()
        max_body, timeout_s, origins = self.limits.max_body, self.limits.request_timeout_s, self.limits.cors_origins
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        allowed = origin is not None and ("*" in origins or origin in origins)
        cors = {"access-control-allow-origin": "*" if "*" in origins else origin or "", "vary": "Origin"}
        if scope["method"] == "OPTIONS" and allowed and "access-control-request-method" in headers:
            preflight = {
                **cors,
                "access-control-allow-methods": "GET, POST, OPTIONS",
                "access-control-allow-headers": "content-type",
                "access-control-max-age": "600",
            }
            await _respond(send, 204, b"", preflight)
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            body = _json({"status": 413, "error": _too_big(max_body, int(length))})
            await _respond(send, 413, body, {"content-type": "application/json", **(cors if allowed else {})})
            return

        # Bodies are counted as they stream in, chunked or not, raw or multipart: a client that sends
        # no Content-Length (or a false one) is cut off at the cap, and memory stays bounded.
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise BodyTooLarge(_too_big(max_body, received, streamed=True))
            return message

        t0 = time.perf_counter()
        status = [500]
        started = [False]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0], started[0] = message["status"], True
                if allowed:
                    extra = ((k.encode(), v.encode()) for k, v in cors.items())
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            async with asyncio.timeout(timeout_s):
                await self.app(scope, capped_receive, send_with_cors)
        except TimeoutError:
            status[0] = 408
            if not started[0]:
                message = (
                    f"request took longer than {timeout_s:g} s (serve.request_timeout_s); send a smaller image or retry"
                )
                body = _json({"status": 408, "error": message})
                await _respond(send, 408, body, {"content-type": "application/json", **(cors if allowed else {})})
        finally:
            _record(scope, status[0], time.perf_counter() - t0)
            if received >= _TRIM_AFTER_BYTES:
                await asyncio.to_thread(release_memory)


#: A request whose body reached this many bytes hands the freed memory back to the system after.
_TRIM_AFTER_BYTES = 8 << 20


def release_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    Why: a big body arrives as many ~1 MB messages, too small for glibc to map them apart and too
    many for the heap's top to shrink after, so a replica that read 100 MB and refused it stayed
    ~100 MB larger for good (issue 18). Trimming after such a request puts the replica back where
    it was; it costs a few ms, off the event loop, and only after big bodies."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes

        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


#: Endpoints with their own metric label; anything else counts as "other" (bounded label values).
ENDPOINTS = ("/", "/health", "/ready", "/demo", "/predict", "/predict/json", "/docs", "/openapi.json")
_metrics: tuple[Any, Any] | None = None


def _record(scope: Scope, status: int, seconds: float) -> None:
    """Per-endpoint request count and latency, through Serve's metrics API (Prometheus, on every
    node's metrics export port: ``dotseg_requests_total`` and ``dotseg_request_latency_ms``)."""
    global _metrics
    try:
        if _metrics is None:
            from ray.serve import metrics

            _metrics = (
                metrics.Counter(
                    "dotseg_requests",
                    description="HTTP requests by endpoint and status",
                    tag_keys=("endpoint", "status"),  # type: ignore[arg-type]  # Ray types it as a 1-tuple
                ),
                metrics.Histogram(
                    "dotseg_request_latency_ms",
                    description="HTTP request latency by endpoint",
                    boundaries=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000],
                    tag_keys=("endpoint",),
                ),
            )
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        path = path[len(root) :] if root and path.startswith(root) else path
        endpoint = path if path in ENDPOINTS else ("/static" if path.startswith("/static/") else "other")
        _metrics[0].inc(tags={"endpoint": endpoint, "status": str(status)})
        _metrics[1].observe(seconds * 1000.0, tags={"endpoint": endpoint})
    except Exception:  # metrics must never fail a request
        pass


def _too_big(max_body: int, size: int, streamed: bool = False) -> str:
    what = (
        f"request body is over the {max_body:,}-byte limit ({size:,} bytes read so far)"
        if streamed
        else (f"request body of {size:,} bytes is over the {max_body:,}-byte limit")
    )
    return f"{what} (serve.max_upload_bytes); send a smaller image"


def _json(obj: Any) -> bytes:
    import json

    return json.dumps(obj).encode()


async def _respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_upload(request: Request, cfg: ServeConfig) -> np.ndarray:
    """The image of a request: a multipart form's ``file`` field or the raw body (PNG, TIFF, NPY)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=cfg.max_upload_bytes)
        except ClientError:  # the body passed the cap while the form was read
            raise
        except Exception as e:  # starlette's MultiPartException and parser errors
            raise ClientError(422, f"malformed multipart body: {' '.join(str(e).split())}") from None
        upload = form.get(FIELD)
        if upload is None or isinstance(upload, str):
            fields = ", ".join(form.keys()) or "none"
            raise ClientError(
                422,
                f"multipart body has no file field {FIELD!r} (fields: {fields}); "
                f"send the image as -F {FIELD}=@image.png",
            )
        data = await upload.read()
        name = upload.filename or FIELD
    else:
        chunks = []
        async for chunk in request.stream():  # capped as it streams (the guard counts every byte)
            chunks.append(chunk)
        data = b"".join(chunks)
        name = "body"
    # Decoding is CPU work: off the event loop, so /health and /ready answer while a big image decodes.
    return await asyncio.to_thread(_decode, data, name, cfg.max_pixels)


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    from dotseg.inference.images import ImageError, decode_image, to_grey

    try:
        image = decode_image(data, name, max_pixels=max_pixels)
    except ImageError as e:
        raise ClientError(e.status, str(e)) from None
    return to_grey(image) if image.ndim == 3 else image  # RGB(A) -> grey, as the Predictor would do


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(encode_png(array)).decode("ascii")


def pictures(image: np.ndarray, pred: Any, truth: np.ndarray | None = None, display: int = 1024) -> dict[str, str]:
    """Base64 PNGs for a page: the image, the mask, the probability heatmap, the overlay (and the
    truth), at most ``display`` px on a side: a 4000 px upload must not become a 19 MB answer.
    CPU work: call it off the event loop."""
    from types import SimpleNamespace

    from dotseg.plots import heatmap, overlay, to_uint8

    step = max(1, -(-max(image.shape[:2]) // display))  # ceil: the smallest stride that fits
    if step > 1:
        image = image[::step, ::step]
        pred = SimpleNamespace(mask=pred.mask[::step, ::step], prob=pred.prob[::step, ::step])
        truth = None if truth is None else truth[::step, ::step]
    out = {
        "image_png": _b64(to_uint8(image)),
        "mask_png": _b64(pred.mask),
        "prob_png": _b64(heatmap(pred.prob)),
        "overlay_png": _b64(overlay(image, truth=truth, pred=pred.mask)),
    }
    if truth is not None:
        out["truth_png"] = _b64(truth)
    return out
