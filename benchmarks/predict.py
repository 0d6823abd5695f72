"""Batch inference: images/s of ``dotseg predict`` on Ray Data against the single-process path.

    python benchmarks/predict.py [--n 300] [--size 512] [--engine auto] [--rounds 2]

Both are run as a user runs them, as whole commands in subprocesses, on the same folder of
synthesized images (seeded), with the same checkpoint (the shipped model), engine and threads:

* ``local``: ``dotseg predict --runner local --threads T`` (one process, no Ray, no manifest);
* ``ray A×t``: ``dotseg predict --runner ray --actors A --threads t`` on an embedded Ray (A actors
  of t threads; A × t = T), writing the manifest (each image also described: foreground fraction,
  confidence, estimated SNR, in-distribution check) and its part files;
* the same with ``--no-describe``: the manifest without the SNR and in-distribution columns, whose
  per-image work (~16 ms at 512 px on one core) the single-process path does not do.

Three rates per row: **in-run** is the images over the seconds the command itself reports for
its predictions (the local path: from the first image, the model loaded; Ray: from Ray's start,
actor start-up included); **steady** is Ray's rate once its pool runs (after the first batch came
back: what a large input sees; for the local path, the in-run rate); **wall** is the images over
the whole command (interpreter, imports, model load, Ray). The ratio is steady against ``local``
in the same round; rounds alternate the order, and the table gives the median per row. The goal
(issue 20): Ray ≥ 0.9× the local path's images/s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, n: int, size: int) -> None:
    from dotseg.synthesis import SynthesisConfig, make_sample

    cfg = SynthesisConfig(size=size)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = make_sample(cfg, 2024, i, noise_scale=0.6, mixed_prob=0.3).image
        np.save(folder / f"img{i:04d}.npy", (np.clip(image, 0, 1.5) * 40000).astype(np.uint16))


def run(args: list[str]) -> tuple[float, float, float | None, str]:
    """(in-run seconds as the command reports them, wall seconds, steady images/s or None, output)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dotseg.cli", "predict", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise SystemExit(f"dotseg predict {' '.join(args)} failed ({r.returncode}):\n{out[-3000:]}")
    m = re.search(r" in ([0-9.]+) s", r.stdout)
    if not m:
        raise SystemExit(f"no timing in the output of dotseg predict {' '.join(args)}:\n{out[-2000:]}")
    steady = re.search(r"; ([0-9.]+) images/s after", r.stdout)
    return float(m.group(1)), wall, float(steady.group(1)) if steady else None, out


def main() -> None:
    from dotseg.device import cpu_line

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="images (default 300)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--engine", default="auto")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads in all (default: cores)")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dotseg-bench-predict-"))
    try:
        make_images(work / "in", a.n, a.size)
        common = ["-i", str(work / "in"), "--engine", a.engine, "--quiet"]
        t = a.threads
        rows: dict[str, list[str]] = {
            "local": ["--runner", "local", "--threads", str(t)],
            f"ray 1x{t}": ["--runner", "ray", "--actors", "1", "--threads", str(t)],
        }
        if t > 1:
            rows[f"ray {t}x1"] = ["--runner", "ray", "--actors", str(t), "--threads", "1"]
        best = f"ray {t}x1" if t > 1 else f"ray 1x{t}"
        rows[f"{best}, --no-describe"] = [*rows[best], "--no-describe"]
        results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in rows}
        engine_line = ""
        for r in range(a.rounds):
            order = list(rows) if r % 2 == 0 else list(reversed(rows))
            measured: dict[str, tuple[float, float, float]] = {}
            for name in order:
                out = work / f"out-{r}-{name.replace(' ', '')}"
                inrun, wall, steady, text = run([*common, "-o", str(out), *rows[name]])
                measured[name] = (a.n / inrun, steady or a.n / inrun, a.n / wall)
                if name == "local":
                    engine_line = text.strip().splitlines()[-1]
                shutil.rmtree(out, ignore_errors=True)
                ir, st, w = measured[name]
                print(f"  round {r + 1} {name}: {ir:.2f} images/s in-run, {st:.2f} steady, {w:.2f} wall", flush=True)
            base = measured["local"][1]
            for name, (ir, st, w) in measured.items():
                results[name].append((ir, st, w, st / base))

        print()
        print(f"Batch inference, {time.strftime('%Y-%m-%d')}: {cpu_line()}; {a.n} images of {a.size} px, ")
        print(f"engine {a.engine}; load average {os.getloadavg()[0]:.2f} at the end.")
        print(f"local run: {engine_line}")
        print()
        print("| runner | images/s in-run | images/s steady | images/s wall | × local (steady) |")
        print("|---|---:|---:|---:|---:|")
        for name, vals in results.items():
            ir, st, w, ratio = (statistics.median(v[i] for v in vals) for i in range(4))
            print(f"| {name} | {ir:.2f} | {st:.2f} | {w:.2f} | {ratio:.2f} |")
        best = max((statistics.median(v[3] for v in vals), k) for k, vals in results.items() if k != "local")
        verdict = "met" if best[0] >= 0.9 else "MISSED"
        print(f"\nbest Ray Data runner: {best[1]} at {best[0]:.2f}x the single process (goal >= 0.9x: {verdict})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
