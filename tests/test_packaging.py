"""The wheel works on its own: built from this tree, installed into a fresh virtual environment,
run from a directory that is not the repository, it finds its named configs and trains.

The fresh environment gets the heavy dependencies (torch, Ray, ...) without downloading anything:
a ``.pth`` file in its site-packages lists the project venv's site-packages. Python processes
``.pth`` files only in site directories themselves, not in directories that a ``.pth`` line adds,
so the project venv's editable-install finder (its own ``.pth``) stays inactive there and
``import dotseg`` must come from the wheel, which the test checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from dotseg.config import dump_yaml, load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
#: What the build reads; copied so that building writes no build/ or egg-info into the working tree.
SOURCES = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE", "configs", "dotseg")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out.stdout


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            # symlinks=True keeps dotseg/configs -> ../configs a link, as in the checkout.
            shutil.copytree(p, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.exists():
            shutil.copy2(p, src / name)
    dist = tmp / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-w",
            str(dist),
            str(src),
        ],
        cwd=tmp,
    )
    (wheel,) = dist.glob("dotseg-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    py = venv / "bin" / "python"
    # Installed before the .pth exists, so this pip sees an empty environment (no project dotseg).
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            str(wheel),
        ],
        cwd=tmp,
    )
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip())
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "dotseg_project_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return venv


def test_wheel_in_a_fresh_venv_finds_its_configs_and_trains(ray_session, tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert shipped and {f"dotseg/configs/{n}" for n in shipped} <= names
    assert {"dotseg/py.typed", "dotseg/assets/model.safetensors"} <= names

    venv = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "elsewhere"  # not the repository: nothing may be found relative to the cwd
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RAY_ADDRESS")}

    # dotseg and its configs come from the wheel's copy in the fresh venv, not from the checkout.
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import dotseg, dotseg.config as c; print(dotseg.__file__); print(c.CONFIG_DIR)",
        ],
        cwd=work,
        env=env,
    )
    module, config_dir = (Path(line) for line in where.split())
    assert module.is_relative_to(venv) and config_dir.is_relative_to(venv), where
    assert sorted(p.name for p in config_dir.glob("*.yaml")) == shipped

    cfg = load_config("cpu")
    out = _run([str(venv / "bin" / "dotseg"), "config", "--config", "cpu"], cwd=work, env=env)
    # The header line may say more than the hash; the config itself must be the checkout's configs/cpu.yaml.
    assert out.startswith(f"# config hash: {cfg.hash}") and out.endswith(dump_yaml(cfg)), out[:500]

    # Training needs Ray, and this session already runs one (ray_session): a second local instance on
    # the same machine must never run beside it (two instances on 2 cores contend for CPUs, memory
    # and ports, and a test could stop the wrong one). So the wheel's driver joins the session's
    # instance with --address, as a second driver (its own Ray job), instead of starting its own.
    # init_ray forwards the address to workers and opts into token auth only where a token exists,
    # the same way the session's own client was started (from this environment).
    address = ray_session.get_runtime_context().gcs_address
    runs = tmp_path / "runs"
    out = _run(
        [
            str(venv / "bin" / "dotseg"),
            "train",
            "--config",
            "smoke",
            "--address",
            address,
            "--set",
            f"train.storage_path={runs}",
        ],
        cwd=work,
        env=env,
        timeout=400,
    )
    assert "finished (completed) after 2 epoch(s)" in out, out
    (run_dir,) = runs.iterdir()
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "history.json").is_file()
