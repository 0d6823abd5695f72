"""`dotseg serve` as a new user runs it: an embedded local Ray, its URLs printed, Ctrl-C leaves nothing.

Starts its own Ray, so it must run before the test session's shared Ray exists (this file sorts
before every test that uses it) and skips when one is already up in this process.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]


def test_dotseg_serve_prints_its_urls_answers_and_ctrl_c_leaves_no_process(tmp_path) -> None:
    """With the default ingress (``auto``: HAProxy on the Ray it starts). HAProxy's stats and metrics
    listeners were on every interface, and its metrics socket path was too long for HAProxy, which
    then did not start at all. (Serve's Python proxy, ``serve.ingress=proxy``, serves the cluster's
    jobs in tests/test_cluster.py: a second embedded run of it here cost ~50 s of CI.)"""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance already runs in this test process; this test starts its own")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dotseg.cli",
            "serve",
            "--port",
            str(port),
            "--set",
            "serve.max_replicas=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line.rstrip())
            if "Ctrl-C stops it." in line:
                break
        text = "\n".join(lines)
        assert "Ctrl-C stops it." in text, text[-2000:]
        assert f"http://127.0.0.1:{port}/docs" in text and f"dashboard  http://127.0.0.1:{port}/" in text
        assert "Traceback" not in text
        for listener in ("HAProxy stats page on 127.0.0.1:", "HAProxy Prometheus metrics on 127.0.0.1:"):
            assert listener in text, text[-2000:]
        assert requests.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()["status"] == "ready"
        started = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert started, "no Ray processes under dotseg serve"
        _listens_on_loopback_and_refuses_drivers_without_the_token(proc.pid, started, tmp_path)
        # Keep reading its output, so a chatty shutdown can never block on a full pipe.
        drain = threading.Thread(target=lambda: lines.extend(x.rstrip() for x in proc.stdout), daemon=True)
        drain.start()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("dotseg serve did not stop within 120 s of Ctrl-C; its last output:\n" + "\n".join(lines[-40:]))
        drain.join(timeout=10)
        assert proc.returncode == 0, "\n".join(lines[-20:])
        deadline = time.monotonic() + 30
        alive = started
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"}
            time.sleep(0.5)
        assert not alive, f"left behind: {[psutil.Process(p).name() for p in alive]}"
    finally:
        if proc.poll() is None:  # only what this test started, by PID (its own session)
            os.killpg(proc.pid, signal.SIGKILL)


def _loopback(address: str) -> bool:
    """127.0.0.1, ::1 or ::ffff:127.0.0.1 (IPv4 loopback on a dual-stack socket)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of ``pids``."""
    out = []
    for c in psutil.net_connections("inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            try:
                name = psutil.Process(c.pid).name()
            except psutil.Error:
                name = "?"
            out.append((c.laddr.ip, c.laddr.port, name))
    return sorted(out)


def _listens_on_loopback_and_refuses_drivers_without_the_token(main: int, started: set[int], tmp_path) -> None:
    """Issue 18: the embedded Ray of `dotseg serve` listened on every interface (GCS, raylet,
    workers, Serve actors, dashboard agent) and its token file was world-readable."""
    listening = _listening(started | {main})
    print("listening during dotseg serve:\n" + "\n".join(f"  {a}:{p}  {n}" for a, p, n in listening))
    exposed = [(a, p, n) for a, p, n in listening if not _loopback(a)]
    assert not exposed, f"listening beyond loopback: {exposed}"
    token = os.path.expanduser("~/.ray/auth_token")
    assert os.path.isfile(token) and (os.stat(token).st_mode & 0o077) == 0, "the token file must be 0600"
    gcs = [p for a, p, n in listening if n == "gcs_server"]
    assert gcs, listening
    probe = f"import ray; ray.init(address='127.0.0.1:{min(gcs)}', log_to_driver=False); print('CONNECTED')"
    home = tmp_path / "home"  # no ~/.ray/auth_token there
    home.mkdir()
    # Nothing answers on the machine's other addresses (a connect is refused, not filtered).
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET]
    for host in [h for h in others if not _loopback(h)]:
        for _, port, name in listening:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((host, port)) != 0, f"{name} answers on {host}:{port}"
    # A driver on this machine without the token is refused (it must use loopback too: a Ray client
    # turns 127.0.0.1 into the routable address, where nothing listens).
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    base["RAY_NUM_REDIS_GET_RETRIES"] = "3"  # a refused driver retries 20 times, 1 s apart, by default
    for extra in ({}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}):
        r = subprocess.run(
            [sys.executable, "-c", probe], env={**base, "HOME": str(home), **extra},
            capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode != 0 and "CONNECTED" not in r.stdout, (extra, r.stdout[-500:], r.stderr[-1500:])
        assert "authentication token is missing or incorrect" in r.stderr.lower(), r.stderr[-1500:]
    with open(token) as f:
        good = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": f.read().strip()}
    r = subprocess.run(
        [sys.executable, "-c", probe], env={**base, "HOME": str(home), **good},
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert "CONNECTED" in r.stdout, r.stderr[-1500:]
