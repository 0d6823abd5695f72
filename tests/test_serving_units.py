"""The serving code's parts without a Serve app around them: the replica's Predictor lock, the HTTP
guard (request timeout, streamed body cap) and what a resubmission does to an app in each state.
The same paths run over real HTTP in tests/test_serving.py and tests/test_cluster.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
from fastapi import Request  # module level: FastAPI resolves the endpoint's string annotations here

from dotseg.serving.config import ServeConfig


class _Probe:
    """Wraps a Predictor and records how many calls were inside it at once."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.active, self.most = inner, 0, 0
        self.guard = threading.Lock()

    def _enter(self) -> None:
        with self.guard:
            self.active += 1
            self.most = max(self.most, self.active)

    def _leave(self) -> None:
        with self.guard:
            self.active -= 1

    def predict(self, image: np.ndarray) -> Any:
        self._enter()
        try:
            time.sleep(0.005)  # widen the window a race needs
            return self.inner.predict(image)
        finally:
            self._leave()

    def predict_batch(self, images: list[np.ndarray], batch_size: int = 8) -> list[Any]:
        self._enter()
        try:
            time.sleep(0.005)
            return self.inner.predict_batch(images, batch_size)
        finally:
            self._leave()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_health_checks_never_use_the_predictor_beside_a_batch() -> None:
    """Issue 18: check_health predicted on the Predictor the batch thread was using, with no lock
    (an engine's infer requests and shape cache shared by two threads)."""
    from dotseg.serving.app import Segmenter

    # The class as written, without Serve's ASGI wrapper around it (whose __init__ is a coroutine).
    user_class = Segmenter.func_or_class.__mro__[1]
    assert user_class.__module__ == "dotseg.serving.app" and "ASGI" not in user_class.__name__
    replica = user_class.__new__(user_class)
    user_class.__init__(replica, ServeConfig(engine="eager").to_dict())
    asyncio.run(replica.reconfigure({"checkpoint": None}))
    probe = _Probe(replica.predictor)
    replica.predictor = probe
    images = [np.random.default_rng(i).random((64, 64), dtype=np.float32) for i in range(2)]
    errors: list[BaseException] = []

    def loop(fn: Any) -> None:
        try:
            for _ in range(15):
                fn()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [
        threading.Thread(target=loop, args=(lambda: replica._predict_locked(images),)),
        threading.Thread(target=loop, args=(replica.check_health,)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert probe.most == 1


def test_no_client_header_lifts_the_request_timeout(monkeypatch) -> None:
    """Issue 18: `x-request-timeout-seconds: 0` made Serve's proxy wait forever; the app's own
    guard ends any request at serve.request_timeout_s with a JSON 408, and a quick one is untouched.
    Also the body cap without Content-Length: a chunked body over it is a 413."""
    import asyncio

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from dotseg.serving import http

    app = FastAPI()
    http.install(app, limits=lambda: http.Limits(max_body=1000, request_timeout_s=0.3))

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(5)
        return {"status": "late"}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    client = TestClient(app)
    t0 = time.monotonic()
    r = client.get("/slow", headers={"x-request-timeout-seconds": "0"})
    assert r.status_code == 408 and "serve.request_timeout_s" in r.json()["error"]
    assert time.monotonic() - t0 < 3
    assert client.post("/echo", content=b"x" * 999).json() == {"bytes": 999}
    r = client.post("/echo", content=iter([b"x" * 600, b"x" * 600]))  # an iterator: sent chunked
    assert r.status_code == 413 and "read so far" in r.json()["error"]


def test_a_scale_only_resubmission_never_swaps_the_model_of_an_app_that_is_not_serving() -> None:
    """Issue 18: `dotseg submit serve --set serve.max_replicas=N` against an UNHEALTHY or
    DEPLOY_FAILED app fell through to starting the shipped model."""
    import pytest

    from dotseg.serving.run import ServeError, plan

    assert plan(None, keep_model=True) == "start"
    assert plan(None, keep_model=False) == "start"
    for status in ("RUNNING", "DEPLOYING"):
        assert plan(status, keep_model=True) == "roll_out"
    for status in ("UNHEALTHY", "DEPLOY_FAILED", "DELETING"):
        assert plan(status, keep_model=False) == "roll_out"  # an explicit --checkpoint replaces it
        with pytest.raises(ServeError, match=f"the dotseg app is {status}.*--checkpoint") as info:
            plan(status, keep_model=True)
        assert "\n" not in str(info.value)


def test_haproxy_mode_keeps_its_admin_socket_private_and_its_listeners_on_loopback(monkeypatch, tmp_path) -> None:
    """Issue 18: Ray 2.60 creates HAProxy's admin socket with mode 666 in a shared /tmp directory
    and binds its stats and metrics listeners on every interface, with no setting to change either.
    The wrapper Ray runs as its HAProxy binary moves those two to loopback; the real HAProxy then
    checks the rewritten configuration (``-c``)."""
    import os
    import shutil
    import stat
    import subprocess

    from dotseg.serving import run

    for key in (
        "RAY_SERVE_ENABLE_HA_PROXY",
        "RAY_SERVE_HAPROXY_SOCKET_PATH",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH",
        "RAY_SERVE_HAPROXY_BINARY_PATH",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
    ):
        # setenv first: monkeypatch restores only what it saw, and a key that was unset would keep
        # haproxy_env's value after this test (a wrapper path that the test then deletes).
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    private = run.haproxy_env()
    try:
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] == str(private / "admin.sock")
        assert os.environ["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"].startswith(str(private))
        # HAProxy refuses socket paths over 97 characters; Ray adds a 56-character node-id directory.
        assert len(str(private / ("0" * 56) / "metrics.sock")) <= 97
        mode = stat.S_IMODE(private.stat().st_mode)
        assert mode == 0o700, oct(mode)  # a 666 socket inside is out of reach of other users
        lines = run.haproxy_listeners()
        assert any("127.0.0.1:8404" in ln and "stats" in ln for ln in lines)
        assert any("127.0.0.1:9101" in ln and "metrics" in ln for ln in lines)
        assert any(str(private / "admin.sock") in ln for ln in lines)

        cfg = tmp_path / "haproxy.cfg"  # the sections of Ray's template that bind
        cfg.write_text(
            "global\n    maxconn 100\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 5s\n    timeout server 5s\n"
            "frontend prometheus\n    bind :9101\n    mode http\n"
            "    http-request use-service prometheus-exporter if { path /metrics }\n    no log\n"
            "frontend http_frontend\n    bind *:8000\n    default_backend app\n"
            "backend app\n    server r1 127.0.0.1:30000\n"
            "listen stats\n  bind *:8404\n  stats enable\n  stats uri /stats\n"
        )
        wrapper = os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"]
        r = subprocess.run([wrapper, "-db", "-f", str(cfg), "-c"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        text = cfg.read_text()
        assert "bind 127.0.0.1:9101" in text and "bind 127.0.0.1:8404" in text
        assert "bind *:8000" in text  # the app's frontend keeps serve.host (here every interface)
    finally:
        shutil.rmtree(private)


def test_the_deployment_version_moves_with_what_replicas_are_built_from_only() -> None:
    """A new checkpoint or scale setting keeps the version (Serve reconfigures or rescales the running
    replicas); an engine, precision, CPU or limit change moves it (Serve starts new replicas)."""
    from dotseg.serving.app import NOT_IN_REPLICA, replica_version

    base = ServeConfig()
    assert set(base.to_dict()) >= NOT_IN_REPLICA, NOT_IN_REPLICA - set(base.to_dict())
    same = base.replace(checkpoint="runs/x/best.safetensors", min_replicas=0, max_replicas=8, port=8080)
    assert replica_version(same) == replica_version(base)
    for change in ({"engine": "eager"}, {"precision": "fp32"}, {"cpus_per_replica": 2.0}, {"max_pixels": 1 << 20}):
        assert replica_version(base.replace(**change)) != replica_version(base), change
