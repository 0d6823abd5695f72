"""A real 2-node Ray cluster on this machine (cluster/local.sh: head and worker on loopback, own
temp dir and ports, token auth on), driven as a user would: `dotseg submit` over the Jobs API.

Runs before the session's Ray instance exists (this file sorts before every test that starts it)
and skips otherwise: two Ray instances on one 2-core machine must never run side by side. Only
the processes local.sh started are stopped (`local.sh stop` kills their process groups; never
`ray stop`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from s3_server import keys, put, read, s3_server
from wandb_log import wandb_run

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.own_ray]

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket():
    """An S3 bucket on loopback that every node of the cluster reaches (its nodes get the endpoint
    and credentials in their environment, as cloud nodes get them from their instance role)."""
    with s3_server("dotseg-runs") as env:
        yield env


@pytest.fixture(scope="module")
def cluster(bucket):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance already runs in this test process; this test starts its own cluster")
    state = Path(tempfile.mkdtemp(prefix="dsc-", dir="/tmp"))  # short: Ray's socket paths live under it
    gcs, dash = _free_port(), _free_port()
    env = {
        **os.environ,
        **bucket,
        "DOTSEG_CLUSTER_DIR": str(state),
        "DOTSEG_GCS_PORT": str(gcs),
        "DOTSEG_DASHBOARD_PORT": str(dash),
        "VENV": str(Path(sys.executable).parent.parent),
    }
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(
        ["bash", str(ROOT / "cluster" / "local.sh"), "start", "1", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        client_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(state / "token")}
        probe = (
            "import ray, time\n"
            f"ray.init(address='127.0.0.1:{gcs}', log_to_driver=False)\n"
            "for _ in range(120):\n"
            "    if len([n for n in ray.nodes() if n['Alive']]) == 2: break\n"
            "    time.sleep(0.5)\n"
            "print(len([n for n in ray.nodes() if n['Alive']]))\n"
        )
        nodes = subprocess.run(
            [sys.executable, "-c", probe], env=client_env, capture_output=True, text=True, timeout=120
        )
        assert nodes.stdout.strip().endswith("2"), nodes.stdout[-2000:] + nodes.stderr[-2000:]
        yield {"jobs": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{gcs}", "env": client_env, "state": state}
    finally:
        subprocess.run(["bash", str(ROOT / "cluster" / "local.sh"), "stop"], env=env, capture_output=True, timeout=120)


def _dotseg(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dotseg.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_training_job_runs_ddp_on_both_nodes_into_a_bucket_and_resumes_from_it(cluster, bucket) -> None:
    run = "s3://dotseg-runs/runs/ddp"
    r = _dotseg(
        cluster["env"],
        "submit",
        "train",
        "--address",
        cluster["jobs"],
        "--config",
        "smoke",
        "--set",
        "train.num_workers=2",
        "--set",
        "train.cpus_per_worker=2",  # 3 CPUs a node: one rank per node, a CPU left for synthesis
        "--set",
        "train.storage_path=s3://dotseg-runs/runs",
        "--set",
        "train.wandb.mode=disabled",
        "--",
        "--name",
        "ddp",
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "SUCCEEDED" in out, out[-4000:]
    nodes = {line.split(" on node ")[1].split(",")[0] for line in out.splitlines() if " on node " in line}
    assert len(nodes) == 2, out[-4000:]  # rank 0 and rank 1 on different nodes, both relayed to the job log
    assert "epoch 2/2" in out and f"best checkpoint: {run}/best.safetensors" in out, out[-4000:]
    stored = keys(bucket, "dotseg-runs", "runs/ddp/")
    for f in ("config.yaml", "best.safetensors", "history.json", "curves.png", "worker_log.jsonl", "ray.log"):
        assert f"runs/ddp/{f}" in stored, stored
    assert any(k.startswith("runs/ddp/checkpoint_") and k.endswith("/model.safetensors") for k in stored), stored

    # Resumed from the bucket alone (nothing local is needed), one epoch longer.
    r = _dotseg(
        cluster["env"],
        "submit",
        "train",
        "--address",
        cluster["jobs"],
        "--set",
        "train.epochs=3",
        "--",
        "--resume",
        run,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "SUCCEEDED" in out, out[-4000:]
    assert "resumed from the checkpoint of epoch 2" in out and "epoch 3/3" in out, out[-4000:]
    history = json.loads(read(bucket, "dotseg-runs", "runs/ddp/history.json"))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    logged = [json.loads(line)["msg"] for line in read(bucket, "dotseg-runs", "runs/ddp/worker_log.jsonl").splitlines()]
    assert [m.split(" ")[1] for m in logged if m.startswith("epoch ")] == ["1/2", "2/2", "3/3"]  # both attempts kept


def test_a_sweep_job_runs_its_trials_on_the_cluster_with_a_wandb_run_each(cluster, tmp_path_factory) -> None:
    runs = tmp_path_factory.mktemp("cluster-sweeps")  # the nodes share this machine's disk
    r = _dotseg(
        cluster["env"],
        "submit",
        "sweep",
        "--address",
        cluster["jobs"],
        "--config",
        "sweep-smoke",
        "--set",
        f"train.storage_path={runs}",
        "--set",
        "tune.name=on-cluster",
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "SUCCEEDED" in out, out[-4000:]
    assert "trial-003" in out and "val Dice (best)" in out, out[-4000:]  # the per-trial lines and the table
    sweep_dir = runs / "on-cluster"
    assert (sweep_dir / "results.csv").is_file() and (sweep_dir / "parallel.png").is_file()
    wandb_runs = [wandb_run(p) for p in sorted((sweep_dir / "wandb").glob("offline-run-*"))]
    assert sorted(w["id"] for w in wandb_runs) == [f"on-cluster-trial-00{i}" for i in range(4)]
    assert all(w["group"] == "on-cluster" and any("val_dice" in row for row in w["rows"]) for w in wandb_runs)


def test_batch_predict_job_over_a_bucket_survives_a_killed_actor_with_every_file_once(cluster, bucket) -> None:
    """`dotseg submit predict` over an S3 prefix, 2 actors (one per node); one actor is killed
    (SIGKILL) once the first batch is written: the job still succeeds, and the manifest lists
    every input exactly once, done, with its mask in the bucket."""
    import csv
    import io
    import signal

    import psutil

    from dotseg.synthesis import SynthesisConfig, make_sample

    n = 120
    for i in range(n):
        buf = io.BytesIO()
        np.save(buf, (make_sample(SynthesisConfig(size=384), 11, i, noise_scale=0.5).image * 30000).astype(np.uint16))
        put(bucket, "dotseg-runs", f"scans/s{i:03d}.npy", buf.getvalue())
    job = subprocess.Popen(
        [sys.executable, "-m", "dotseg.cli", "submit", "predict", "--address", cluster["jobs"], "--", "--input",
         "s3://dotseg-runs/scans/", "--output", "s3://dotseg-runs/masks", "--actors", "2", "--threads", "1",
         "--engine", "eager"],
        env=cluster["env"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    killed, parts_then = None, 0
    try:
        deadline = time.monotonic() + 240
        while killed is None and job.poll() is None and time.monotonic() < deadline:
            parts_then = sum("/part-" in k for k in keys(bucket, "dotseg-runs", "masks/"))
            if parts_then:
                actors = [
                    p for p in psutil.process_iter(["name", "cmdline"])
                    if "MapBatches(_PredictActor)" in (p.info["name"] or "") + " ".join(p.info["cmdline"] or [])
                ]  # fmt: skip
                if actors:
                    killed = actors[0].pid
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        out, _ = job.communicate(timeout=400)
    finally:
        if job.poll() is None:
            job.kill()
    assert killed is not None, "no actor was found to kill before the job ended"
    assert parts_then < 4, parts_then  # killed mid-run: 8 batches of 15 files, fewer than half written
    assert job.returncode == 0 and "SUCCEEDED" in out, out[-4000:]
    assert f"predicted {n} of {n} images" in out, out[-4000:]
    stored = keys(bucket, "dotseg-runs", "masks/")
    rows = list(csv.DictReader(io.StringIO(read(bucket, "dotseg-runs", "masks/manifest.csv").decode())))
    inputs = [r["input"] for r in rows]
    assert len(inputs) == n and sorted(set(inputs)) == [f"s3://dotseg-runs/scans/s{i:03d}.npy" for i in range(n)]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    assert all(f"masks/s{i:03d}_mask.png" in stored for i in range(n)), stored
    assert "masks/manifest.parquet" in stored and not any("/part-" in k for k in stored), stored
    # Which node did each batch is Ray's choice: the pool spread over both nodes in most runs, but
    # a restarted actor may land beside the other one, and then one node writes every row.
    assert 1 <= len({r["node"] for r in rows}) <= 2, {r["node"] for r in rows}


def test_a_job_with_a_bad_config_fails_with_its_error_line(cluster) -> None:
    r = _dotseg(
        cluster["env"], "submit", "train", "--address", cluster["jobs"], "--config", "smoke", "--set", "train.lr=-1"
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    assert "FAILED: dotseg train: error: train.lr" in out, out[-3000:]  # the failing line, not just FAILED


def test_a_missing_or_wrong_token_is_one_clear_line(cluster) -> None:
    no_token = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")}
    wrong = {**cluster["env"], "RAY_AUTH_TOKEN": "0" * 64}
    wrong.pop("RAY_AUTH_TOKEN_PATH")
    for env in (no_token, wrong):
        r = _dotseg(env, "jobs", "list", "--address", cluster["jobs"], timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "RAY_AUTH_TOKEN" in lines[0] and "RAY_AUTH_TOKEN_PATH" in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_serve_job_serves_then_rolls_a_new_checkpoint_out_with_no_failed_request(cluster, bucket) -> None:
    import io
    import threading

    import requests

    from dotseg.checkpoint import build_from_checkpoint, save_checkpoint
    from dotseg.inference.predictor import shipped_checkpoint
    from dotseg.synthesis import SynthesisConfig, make_sample

    port = _free_port()
    common = ["--address", cluster["jobs"], "--set", f"serve.port={port}", "--set", "serve.max_replicas=1"]
    r = _dotseg(cluster["env"], "submit", "serve", *common)  # the shipped model
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "SUCCEEDED" in out and "detached (started)" in out, out[-4000:]
    api = f"http://127.0.0.1:{port}"
    before = requests.get(f"{api}/ready", timeout=10).json()["model"]
    buf = io.BytesIO()
    np.save(buf, make_sample(SynthesisConfig(size=128), 3, 0, noise_scale=0.3).image)
    body = buf.getvalue()
    first = requests.post(f"{api}/predict", data=body, timeout=60)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png", first.text[:300]

    # A promoted model (the shipped weights under another run identity, so another model id), in
    # the bucket every node reads.
    model, ckpt = build_from_checkpoint(shipped_checkpoint())
    local = save_checkpoint(
        cluster["state"] / "promoted.safetensors",
        model,
        ckpt.cfg.replace(**{"train.seed": ckpt.cfg.train.seed + 1}),
        threshold=0.5,
        metrics={},
        epoch=24,
    )
    promoted = "s3://dotseg-runs/promoted/promoted.safetensors"
    put(bucket, "dotseg-runs", "promoted/promoted.safetensors", local.read_bytes())
    # Promote another model to the running endpoint (the shipped one) under load: no request fails.
    stop, codes = threading.Event(), []

    def load() -> None:
        while not stop.is_set():
            try:
                codes.append(requests.post(f"{api}/predict", data=body, timeout=60).status_code)
            except requests.RequestException:
                codes.append(-1)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        r = _dotseg(cluster["env"], "submit", "serve", *common, "--", "--checkpoint", promoted)
    finally:
        time.sleep(2)
        stop.set()
        for w in workers:
            w.join(timeout=90)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "detached (rolled out to the running app)" in out, out[-4000:]
    after = requests.get(f"{api}/ready", timeout=10).json()["model"]
    assert after["model_id"] != before["model_id"] and after["checkpoint"] == "promoted.safetensors", (before, after)
    assert len(codes) > 5 and all(c == 200 for c in codes), {c: codes.count(c) for c in set(codes)}

    # Scaling the endpoint: the same job without --checkpoint keeps the model it serves.
    r = _dotseg(cluster["env"], "submit", "serve", *common[:-1], "serve.max_replicas=3")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "updated the running app, same model" in out and "1-3 replica(s)" in out, out[-3000:]
    assert requests.get(f"{api}/ready", timeout=10).json()["model"]["model_id"] == after["model_id"]
    token = (cluster["state"] / "token").read_text().strip()
    details = requests.get(
        f"{cluster['jobs']}/api/serve/applications/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()
    (deployment,) = details["applications"]["dotseg"]["deployments"].values()
    assert deployment["deployment_config"]["autoscaling_config"]["max_replicas"] == 3
