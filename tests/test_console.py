"""What a user sees on the console during `dotseg train`: dotseg's own lines, and none of Ray's chatter.

Ray's output of a healthy run (Train's `Reporting training result N: TrainingReport(...)` lines, the
controller's C++ `core_worker.cc ... E ...` lines, Ray Data's notices) belongs in the run's ray.log
and the Ray session's log files; `--verbose` brings it back to the console.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Lines that must never reach the console of a healthy run.
NOISE = [
    re.compile(p)
    for p in (
        r"TrainingReport\(",
        r"\w\.cc:\d+",  # glog location of a C++ log line: core_worker.cc:2465
        r"\b[IWEF] \d+ \d+\]",  # glog header: [2026-11-30 12:35:59,984 E 4271 4412]
        r"core_worker",
        r"Traceback",
        r"ERROR",
        r"\((RayTrainWorker|TrainController|PlacementGroupCleaner|\w+) pid=\d+\)",  # echoed worker output
    )
]


def test_smoke_run_console_shows_dotseg_lines_only(ray_session, tmp_path: Path) -> None:
    # The CLI runs as its own process, exactly as `make run` starts it (`python -m dotseg.cli train`):
    # the console handler, init_ray's log settings (no log_to_driver) and the driver's Ray loggers are
    # all set up from scratch, as for a user. In this process init_ray would be a no-op (the session's
    # Ray is already initialized, with its own settings) and the test would prove nothing about them.
    # It joins the session's Ray with --address instead of starting an embedded one: a second local
    # instance must never run beside the session's. The embedded branch differs only in ray.init's
    # cluster arguments; both branches get the same log settings.
    address = ray_session.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dotseg.cli",
            "train",
            "--config",
            "smoke",
            "--name",
            "console",
            "--address",
            address,
            "--set",
            f"train.storage_path={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-5000:]

    lines = console.splitlines()
    epochs = [line for line in lines if line.startswith("[dotseg] epoch ")]
    assert len(epochs) == 2, console
    assert re.fullmatch(
        r"\[dotseg\] epoch 1/2 easy \(noise 0\.10, mixed 0\.0\) \| loss \d\.\d{4} \| .* \| ETA \S+", epochs[0]
    ), epochs[0]
    assert epochs[1].startswith("[dotseg] epoch 2/2 extreme (noise 1.00, mixed 0.6) | loss ")
    run_dir = tmp_path / "console"
    assert f"[dotseg] run {run_dir}  (config hash " in lines[0], console
    assert any(line.startswith(f"[dotseg] best checkpoint: {run_dir / 'best.safetensors'}") for line in lines)
    for pattern in NOISE:
        assert not [line for line in lines if pattern.search(line)], (pattern.pattern, console)
    assert all(line.startswith("[dotseg] ") for line in lines), console  # nothing but dotseg's own lines

    # Ray's chatter went to the logs instead: the driver's to ray.log, which names the session's log
    # directory, where the workers' output is (this run's TrainingReport lines among it).
    ray_log = (run_dir / "ray.log").read_text()
    assert "Connecting to existing Ray cluster" in ray_log, ray_log
    session_logs = Path(re.search(r"Ray session logs \(.*\): (\S+)", ray_log).group(1))
    assert any(
        "Reporting training result" in text and str(run_dir) in text
        for text in (p.read_text(errors="replace") for p in session_logs.glob("worker-*.err"))
    ), session_logs
    # The workers' dotseg records, as relayed to the console.
    records = [json.loads(line) for line in (run_dir / "worker_log.jsonl").read_text().splitlines()]
    assert [r["msg"].split(" ", 2)[:2] for r in records] == [["epoch", "1/2"], ["epoch", "2/2"]]


def test_the_embedded_rays_token_file_is_private(ray_session) -> None:
    """Issue 18: Ray writes ~/.ray/auth_token 0644; dotseg's embedded Ray leaves it readable by its owner only."""
    token = Path.home() / ".ray" / "auth_token"
    assert token.is_file()
    assert token.stat().st_mode & 0o777 == 0o600
