"""Nothing a user made is lost on a kill (issue 19): files are replaced whole or not at all, a cut
file left by an older dotseg is refused in one line, and run names stay plain names."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dotseg.config import Config
from dotseg.files import copy_atomic, write_atomic

WRITER = """
import sys
from pathlib import Path
from dotseg.files import copy_atomic, write_atomic
how, dst, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
if how == "write":
    write_atomic(dst, b"n" * size)
else:
    src = dst.with_name("source.bin")
    copy_atomic(src, dst)
"""


def _kill_mid_write(tmp_path: Path, how: str, size: int) -> Path:
    """Start a writer of ``size`` bytes over an existing file and SIGKILL it once its temporary
    file exists and is growing; returns the destination."""
    dst = tmp_path / "best.safetensors"
    dst.write_bytes(b"old file")
    if how == "copy":
        with open(tmp_path / "source.bin", "wb") as f:
            f.write(os.urandom(1 << 20) * (size >> 20))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, how, str(dst), str(size)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        parts = [p for p in tmp_path.glob(".best.safetensors.*.tmp") if p.stat().st_size > 0]
        if parts:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed mid-write"
    return dst


@pytest.mark.parametrize("how", ["write", "copy"])
def test_a_kill_mid_write_leaves_the_old_file_whole(tmp_path: Path, how: str) -> None:
    dst = _kill_mid_write(tmp_path, how, 512 << 20)
    assert dst.read_bytes() == b"old file"  # shutil.copyfile / write_text left a cut file here


def test_atomic_writes_replace_whole_files_with_readable_permissions(tmp_path: Path) -> None:
    dst = tmp_path / "sub" / "config.yaml"
    write_atomic(dst, "a: 1\n")
    write_atomic(dst, "a: 2\n")
    assert dst.read_text() == "a: 2\n" and (dst.stat().st_mode & 0o777) == 0o644
    copy_atomic(dst, tmp_path / "copy.yaml")
    assert (tmp_path / "copy.yaml").read_text() == "a: 2\n"
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(FileNotFoundError):
        copy_atomic(tmp_path / "missing", tmp_path / "copy.yaml")
    assert (tmp_path / "copy.yaml").read_text() == "a: 2\n" and not list(tmp_path.rglob("*.tmp"))


def test_a_cut_trial_file_is_skipped_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated trial.json (a kill while an older dotseg wrote it) ended --report and --promote
    in a traceback."""
    from dotseg.tuning.results import TRIAL_FILE, collect

    good = {"trial": "trial-002", "params": {"train.lr": 0.001}, "seed": 2}
    (tmp_path / "trial-001").mkdir()
    (tmp_path / "trial-001" / TRIAL_FILE).write_text('{"trial": "trial-001", "par')
    (tmp_path / "trial-002").mkdir()
    (tmp_path / "trial-002" / TRIAL_FILE).write_text(json.dumps(good))
    with caplog.at_level(logging.WARNING):
        rows = collect(tmp_path, Config())
    assert [r["trial"] for r in rows] == ["trial-002"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "trial-001" in warning and "unreadable" in warning and "\n" not in warning


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "-x", "\u00e9t\u00e9"])
def test_run_names_are_plain_names(tmp_path: Path, name: str) -> None:
    from dotseg.configbase import ConfigError
    from dotseg.training.run import TrainError, new_run_dir

    cfg = Config().replace(**{"train.storage_path": str(tmp_path)})
    with pytest.raises(TrainError, match="a plain name"):
        new_run_dir(cfg, name)
    assert new_run_dir(cfg, "v2-ft.1").name == "v2-ft.1"
    with pytest.raises(ConfigError, match=r"tune\.name"):
        Config().replace(**{"tune.name": name})
