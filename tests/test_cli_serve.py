"""`dotseg serve` as a new user runs it: an embedded local Ray, its URLs printed, Ctrl-C leaves nothing.

Starts its own Ray, so it must run before the test session's shared Ray exists (this file sorts
before every test that uses it) and skips when one is already up in this process.
"""

from __future__ import annotations

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

pytestmark = [pytest.mark.slow]


def test_dotseg_serve_prints_its_urls_answers_and_ctrl_c_leaves_no_process(tmp_path) -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance already runs in this test process; this test starts its own")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dotseg.cli", "serve", "--port", str(port), "--set", "serve.max_replicas=1"],
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
        assert requests.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()["status"] == "ready"
        started = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert started, "no Ray processes under dotseg serve"
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
