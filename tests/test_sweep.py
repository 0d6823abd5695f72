"""`dotseg sweep` on the session's Ray: the 4-trial ASHA smoke sweep (results, pictures, W&B runs
read back from their .wandb files), promotion to predict and Serve, a driver killed with SIGKILL
and resumed, DDP trials through a TorchTrainer per trial, and the one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from wandb_log import wandb_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _main(*args: str) -> tuple[int, str]:
    """``dotseg ARGS`` in this process (joins the session's Ray), with everything it printed."""
    from dotseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def smoke(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    # One trial at a time: which of two concurrent trials reaches an ASHA rung first decides whether
    # the other is stopped (a CI run saw no stop at all); in grid order the decisions are certain.
    code, out = _main(
        "sweep",
        "--config",
        "sweep-smoke",
        "--set",
        f"train.storage_path={root}",
        "--set",
        "tune.name=smoke",
        "--set",
        "tune.max_concurrent_trials=1",
    )
    assert code == 0, out
    return root / "smoke", out


def test_smoke_sweep_asha_stops_a_trial_and_writes_results_pictures_and_wandb_runs(smoke) -> None:
    from PIL import Image

    sweep_dir, out = smoke
    # Deterministic names and grid order; each trial records its params and seed.
    trials = {t.parent.name: json.loads(t.read_text()) for t in sorted(sweep_dir.glob("trial-*/trial.json"))}
    assert list(trials) == ["trial-000", "trial-001", "trial-002", "trial-003"]
    assert [t["params"] for t in trials.values()] == [
        {"model.variant": v, "train.lr": lr} for lr in (3e-3, 1e-7) for v in ("unet", "attention_unet")
    ]
    assert all(t["seed"] == 0 and t["style"] == "function" and t["sweep"] == "smoke" for t in trials.values())

    # One line per event, no Tune tables.
    assert "stopped by ASHA after epoch" in out and "finished 4 epochs" in out, out
    assert "Trial status" not in out and "╭" not in out and "Traceback" not in out, out
    events = [json.loads(line) for line in (sweep_dir / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "started" for e in events) == 4

    with (sweep_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    dice = [float(r["best_val_dice"]) for r in rows]
    assert dice == sorted(dice, reverse=True)
    stopped = {r["trial"]: int(r["epochs_run"]) for r in rows if r["status"] == "stopped (ASHA)"}
    assert stopped == {"trial-001": 1, "trial-002": 2}, rows  # below the rung's median when they reached it
    assert all(int(r["epochs_run"]) == 4 for r in rows if r["status"] == "finished"), rows
    assert "| # | trial | model.variant | train.lr |" in (sweep_dir / "results.md").read_text()
    for picture in ("parallel.png", "curves.png"):
        with Image.open(sweep_dir / picture) as im:
            assert im.format == "PNG" and im.width >= 600

    # Four W&B offline runs, one per trial, in the sweep's group, with the trial's config and curves.
    by_trial = {r["trial"]: r for r in rows}
    runs = [wandb_run(p) for p in sorted((sweep_dir / "wandb").glob("offline-run-*"))]
    assert len(runs) == 4
    for run in runs:
        name = run["name"]
        assert run["id"] == f"smoke-{name}" and run["group"] == "smoke" and run["job_type"] == "sweep-trial"
        assert {k: run["config"][k] for k in trials[name]["params"]} == trials[name]["params"]
        assert run["config"]["model"]["variant"] == trials[name]["params"]["model.variant"]
        history = [r for r in run["rows"] if "val_dice" in r]
        assert [int(h["epoch"]) for h in history] == list(range(1, int(by_trial[name]["epochs_run"]) + 1))
        assert max(h["val_dice"] for h in history) == pytest.approx(float(by_trial[name]["best_val_dice"]))
        assert run["summary"]["status"] == by_trial[name]["status"]
    # ...and one `wandb sync` of the sweep's wandb/ folder would upload all four (dry run: no network here).
    wandb_cli = Path(sys.executable).parent / "wandb"
    dry = subprocess.run(
        [str(wandb_cli), "sync", "--dry-run", str(sweep_dir / "wandb")], capture_output=True, text=True
    )
    assert "Would sync 4 run(s)" in dry.stdout + dry.stderr, dry.stdout + dry.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_promoted_checkpoint_predicts_and_serves(smoke, tmp_path: Path) -> None:
    import requests
    from PIL import Image
    from ray import serve

    from dotseg.checkpoint import load_checkpoint
    from dotseg.serving import run
    from dotseg.serving.config import ServeConfig
    from dotseg.synthesis import SynthesisConfig, make_sample

    sweep_dir, _ = smoke
    best = tmp_path / "best.safetensors"
    code, out = _main("sweep", "--promote", str(sweep_dir), "--out", str(best))
    assert code == 0 and "promoted trial-" in out, out
    with (sweep_dir / "results.csv").open() as f:
        winner = next(csv.DictReader(f))
    ckpt = load_checkpoint(best)
    assert ckpt.meta.provenance.sweep == "smoke" and ckpt.meta.provenance.trial == winner["trial"]
    assert ckpt.epoch == int(winner["best_epoch"])
    assert ckpt.metrics["val_dice"] == pytest.approx(float(winner["best_val_dice"]))

    image = make_sample(SynthesisConfig(size=64), 5, 0, noise_scale=0.3).image
    np.save(tmp_path / "x.npy", image)
    code, out = _main(
        "predict", "--checkpoint", str(best), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "m")
    )
    assert code == 0, out
    with Image.open(tmp_path / "m" / "x_mask.png") as im:
        assert im.size == (64, 64)

    cfg = ServeConfig(checkpoint=str(best), port=_free_port(), min_replicas=1, max_replicas=1)
    urls = run.start(cfg)
    try:
        run.wait_ready(urls["api"])
        ready = requests.get(f"{urls['api']}/ready", timeout=10).json()
        assert ready["model"]["model_id"] == ckpt.model_id and ready["model"]["checkpoint"] == "best.safetensors"
        buf = io.BytesIO()
        np.save(buf, image)
        r = requests.post(f"{urls['api']}/predict", data=buf.getvalue(), timeout=60)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:200]
    finally:
        serve.shutdown()


def test_a_trial_in_a_suffixed_directory_is_read_and_promoted_from_there(smoke, tmp_path: Path) -> None:
    """After a --resume, Tune can put a trial in ``trial-NNN_xxxx`` (the killed driver left ``trial-NNN``
    behind): results and promotion read the directory that holds the trial's checkpoints."""
    import shutil

    from dotseg.checkpoint import load_checkpoint

    sweep_dir = tmp_path / "smoke"
    shutil.copytree(smoke[0], sweep_dir)
    with (sweep_dir / "results.csv").open() as f:
        before = {r["trial"]: r for r in csv.DictReader(f)}
    winner = next(iter(before))
    (sweep_dir / winner).rename(sweep_dir / f"{winner}_51d6")
    (sweep_dir / winner).mkdir()  # what the killed driver left: the trial's files, no checkpoint
    shutil.copy(sweep_dir / f"{winner}_51d6" / "trial.json", sweep_dir / winner)

    code, out = _main("sweep", "--promote", str(sweep_dir), "--out", str(tmp_path / "best.safetensors"))
    assert code == 0 and f"promoted {winner}" in out, out
    assert load_checkpoint(tmp_path / "best.safetensors").meta.provenance.trial == winner
    code, out = _main("sweep", "--report", str(sweep_dir))
    assert code == 0, out
    with (sweep_dir / "results.csv").open() as f:
        after = {r["trial"]: r for r in csv.DictReader(f)}
    assert after[winner]["dir"] == f"{winner}_51d6" and after[winner]["epochs_run"] == before[winner]["epochs_run"]
    assert {k: {**r, "dir": ""} for k, r in after.items()} == {k: {**r, "dir": ""} for k, r in before.items()}


def test_tunes_state_files_are_where_the_repair_looks_for_them(smoke) -> None:
    """dotseg.tuning.state relies on Ray Tune's private layout (file names, the staging directory):
    when a Ray upgrade moves them, this fails naming the version, not a resume months later."""
    import ray

    from dotseg.tuning.state import layout_problems

    problems = layout_problems(smoke[0])
    assert not problems, (
        f"Ray {ray.__version__} moved Tune's state files ({'; '.join(problems)}); dotseg/tuning/state.py "
        "was written for Ray 2.60's layout: update STATE_FILES / _staging_copies"
    )


def test_a_state_file_cut_short_is_put_back_from_its_whole_copy_or_named(tmp_path: Path) -> None:
    """Tune's experiment state (JSON) and its searcher's (a pickle) are kept and put back as a set."""
    import pickle

    from dotseg.tuning.layout import SweepError
    from dotseg.tuning.state import STATE_BACKUP, back_up_state, repair_state

    state = tmp_path / "experiment_state-2026-11-30_23-04-04.json"
    searcher = tmp_path / "basic-variant-state-2026-11-30_23-04-04.json"  # a pickle, despite its name
    state.write_text('{"trial_data": [1, 2]}')
    whole = pickle.dumps({"generated": 2})
    searcher.write_bytes(whole)
    seen: dict[str, int] = {}
    back_up_state(tmp_path, seen, settle_s=0)
    state.write_text('{"trial_data": [1,')  # the copy the kill interrupted...
    searcher.write_bytes(pickle.dumps({"generated": 3}))  # ...after the searcher's newer one
    back_up_state(tmp_path, seen, settle_s=0)  # a set with a cut file is never kept
    assert repair_state(tmp_path) == ([searcher.name, state.name], "the last whole copy the driver kept")
    assert json.loads(state.read_text()) == {"trial_data": [1, 2]} and searcher.read_bytes() == whole
    assert repair_state(tmp_path) == ([], "")
    searcher.write_bytes(whole[:-5])
    assert repair_state(tmp_path)[0] == [searcher.name] and searcher.read_bytes() == whole

    (tmp_path / STATE_BACKUP / state.name).unlink()
    state.write_text("")
    with pytest.raises(SweepError, match=f"{state.name} was cut short .* delete it to resume"):
        repair_state(tmp_path)


def test_a_killed_driver_resumes_without_rerunning_finished_trials(ray_session, tmp_path: Path) -> None:
    """SIGKILL the driver (a second driver on the session's Ray) once a trial has finished and others
    run; --resume completes every trial; a trial that finished before the kill never starts again,
    and no trial trains an epoch it had checkpointed."""
    address = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "dotseg.cli", "sweep"]
    common = ["--address", address]
    env = {**os.environ, "WANDB_MODE": "offline"}
    start = subprocess.Popen(
        [
            *cmd,
            "--config",
            "sweep-smoke",
            "--set",
            f"train.storage_path={tmp_path}",
            "--set",
            "tune.name=killed",
            "--set",
            "tune.scheduler=fifo",
            "--set",
            "train.samples_per_epoch=96",
            *common,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    sweep_dir = tmp_path / "killed"
    events_file = sweep_dir / "events.jsonl"
    deadline = time.monotonic() + 240
    finished_before: set[str] = set()
    while time.monotonic() < deadline and start.poll() is None:
        events = [json.loads(x) for x in events_file.read_text().splitlines()] if events_file.exists() else []
        finished_before = {e["trial"] for e in events if e["event"] == "finished"}
        running = {e["trial"] for e in events if e["event"] == "epoch"} - finished_before
        if finished_before and running:
            break
        time.sleep(0.2)
    time.sleep(1.5)  # Tune saves its experiment state every second (TUNE_GLOBAL_CHECKPOINT_S)
    assert start.poll() is None, start.communicate()[0].decode()[-2000:]
    os.killpg(start.pid, signal.SIGKILL)
    start.wait(timeout=30)
    killed_at = time.time()
    assert finished_before, "no trial finished before the deadline"
    # A kill during Tune's in-place copy of its state file leaves it empty (seen in the stress runs,
    # where Tune then started the sweep over with the base config): the worst case, every time.
    max(sweep_dir.glob("experiment_state-*.json")).write_text("")

    resumed = subprocess.run(
        [*cmd, "--resume", str(sweep_dir), *common], capture_output=True, text=True, env=env, timeout=400
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "cut short by the kill; resuming from Ray's staging copy on this machine" in resumed.stdout + resumed.stderr
    with (sweep_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "finished" and r["epochs_run"] == "4" for r in rows), rows

    events = [json.loads(x) for x in events_file.read_text().splitlines() if x.strip()]
    restarted = {e["trial"] for e in events if e["event"] == "started" and e["time"] > killed_at}
    assert not (restarted & finished_before), (restarted, finished_before)
    for row in rows:  # the trial's directory: trial-NNN, or trial-NNN_xxxx when the kill left trial-NNN behind
        trial_dir = sweep_dir / row["dir"]
        lines = [json.loads(x)["msg"] for x in (trial_dir / "worker_log.jsonl").read_text().splitlines()]
        trained = [int(m.split()[1].split("/")[0]) for m in lines if m.startswith("epoch ")]
        resumed_from = [int(m.rsplit(" ", 1)[1]) for m in lines if m.startswith("resumed from the checkpoint of epoch")]
        # Epochs after the checkpoint a trial resumed from may run again (they were in flight); none before.
        allowed_again = set(range(max(resumed_from, default=4) + 1, 5))
        repeats = {e for e in trained if trained.count(e) > 1}
        assert repeats <= allowed_again, (trial_dir.name, trained, resumed_from)
        assert sorted(set(trained)) == [1, 2, 3, 4], (trial_dir.name, trained)
        if row["trial"] in finished_before:
            assert trained == [1, 2, 3, 4] and not resumed_from, (trial_dir.name, lines)


def test_ddp_trials_run_a_torch_trainer_each(ray_session, tmp_path: Path) -> None:
    code, out = _main(
        "sweep",
        "--config",
        "sweep-smoke",
        "--set",
        f"train.storage_path={tmp_path}",
        "--set",
        "tune.name=ddp",
        "--set",
        "tune.space=[{key: model.variant, kind: grid, values: [unet, attention_unet]}]",
        "--set",
        "tune.scheduler=fifo",
        "--set",
        "train.num_workers=2",
        "--set",
        "train.epochs=2",
        "--set",
        "curriculum.phases=[{name: easy, start_epoch: 1, noise_scale: 0.1, mixed_prob: 0.0}]",
        "--set",
        "loss.boundary={start: 0.0, end: 0.5, from_epoch: 1, to_epoch: 2}",
    )
    assert code == 0, out
    assert "trainer trials" in out and out.count("finished 2 epochs") == 2, out
    sweep_dir = tmp_path / "ddp"
    for trial in ("trial-000", "trial-001"):
        assert json.loads((sweep_dir / trial / "trial.json").read_text())["style"] == "trainer"
        assert list((sweep_dir / trial / "run").glob("checkpoint_*/model.safetensors"))
    runs = [wandb_run(p) for p in sorted((sweep_dir / "wandb").glob("offline-run-*"))]
    assert sorted(r["name"] for r in runs) == ["trial-000", "trial-001"]  # one per trial, never one per rank
    assert all(len([h for h in r["rows"] if "val_dice" in h]) == 2 for r in runs)


# -- errors, without Ray ------------------------------------------------------------------------


def test_trials_that_cannot_fit_are_refused_up_front_with_numbers() -> None:
    from dotseg.config import load_config
    from dotseg.tuning.sweep import SweepError, concurrency

    cfg = load_config("sweep-smoke")
    assert concurrency(cfg, "function", {"CPU": 4.0}) == 2  # 1 + 0.5 per trial; max 2 at once
    assert concurrency(cfg, "function", {"CPU": 2.0}) == 1
    with pytest.raises(SweepError, match=r"one trial cannot start: the cluster has 1 CPUs but .* need 1\.5"):
        concurrency(cfg, "function", {"CPU": 1.0})
    gpu = cfg.replace(**{"train.use_gpu": True})
    with pytest.raises(SweepError, match="GPU"):
        concurrency(gpu, "function", {"CPU": 8.0})


def test_sweep_config_errors_are_one_line(cli) -> None:
    r = cli(
        "sweep",
        "--config",
        "sweep-smoke",
        "--set",
        "tune.space=[{key: model.variant, kind: grid, values: [unet, unetx]}]",
    )
    assert r.returncode == 2 and "tune.space[0].values: model.variant='unetx' is not valid" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli(
        "sweep", "--config", "sweep-smoke", "--set", "tune.space=[{key: loss.boundry.end, kind: grid, values: [0.5]}]"
    )
    assert r.returncode == 2 and "tune.space[0].key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("sweep", "--config", "sweep-smoke", "--set", "tune.trial_style=function", "--set", "train.num_workers=2")
    assert r.returncode == 2 and "tune.trial_style: function trials run in one process" in r.stderr


def test_truncated_or_foreign_sweep_directories_get_one_line(cli, tmp_path: Path) -> None:
    r = cli("sweep", "--resume", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hi")
    r = cli("sweep", "--resume", str(tmp_path / "foreign"))
    assert r.returncode == 2 and "not a dotseg sweep directory" in r.stderr
    (tmp_path / "foreign" / "sweep.yaml").write_text("synthesis: {size: [oops")
    r = cli("sweep", "--resume", str(tmp_path / "foreign"))
    assert r.returncode == 2 and "not a readable sweep config" in r.stderr
    (tmp_path / "foreign" / "sweep.yaml").write_text("tune: {name: x}\n")
    r = cli("sweep", "--resume", str(tmp_path / "foreign"))
    assert r.returncode == 2 and "no Ray Tune experiment state" in r.stderr
    r = cli("sweep", "--promote", str(tmp_path / "foreign"), "--out", str(tmp_path / "x.safetensors"))
    assert r.returncode == 2 and "no Ray Tune experiment state" in r.stderr
    r = cli("sweep", "--resume", str(tmp_path / "foreign"), "--config", "sweep-smoke")
    assert r.returncode == 2 and "drop --config" in r.stderr
    assert all("Traceback" not in x for x in (r.stdout, r.stderr))
