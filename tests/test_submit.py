"""`dotseg submit` / `dotseg jobs` without a cluster: what a job would upload, its entry point and
environment, the line a failed job's log is summed up by, and the one-line client errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dotseg import submit as jobs

ROOT = Path(__file__).resolve().parent.parent


def test_the_upload_leaves_out_environments_runs_and_history_and_fits_rays_limit(tmp_path: Path) -> None:
    for rel, size in {
        "jobs/train.py": 10,
        "dotseg/__init__.py": 0,
        "configs/x.yaml": 20,
        ".venv/lib/big.so": 5000,
        "runs/r/checkpoint_000001/model.safetensors": 5000,
        ".git/objects/pack": 5000,
        "sub/wandb/offline-run/x.wandb": 5000,
        "dotseg/__pycache__/a.pyc": 5000,
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    up = jobs.measure_upload(tmp_path)
    assert (up.files, up.bytes) == (3, 30), up
    with pytest.raises(jobs.SubmitError, match=r"over Ray's 0 MiB limit; the largest files: configs/x\.yaml"):
        jobs.measure_upload(tmp_path, limit=25)
    assert jobs.measure_upload(ROOT).bytes < jobs.UPLOAD_LIMIT  # this project, as a user would submit it


def test_entrypoint_config_names_paths_and_overrides() -> None:
    ep = jobs.entrypoint("train", "smoke", ["train.lr=3e-4", "tune.name=a b"], [], ROOT)
    assert ep == "python jobs/train.py --config smoke --set train.lr=3e-4 --set 'tune.name=a b'"
    ep = jobs.entrypoint("sweep", str(ROOT / "configs" / "sweep-smoke.yaml"), [], ["--quiet"], ROOT)
    assert ep == "python jobs/sweep.py --config configs/sweep-smoke.yaml --quiet"
    with pytest.raises(jobs.SubmitError, match="outside the project directory"):
        jobs.entrypoint("train", "/etc/hostname", [], [], ROOT)
    with pytest.raises(jobs.SubmitError, match="unknown job"):
        jobs.entrypoint("destroy", None, [], [], ROOT)
    for command in jobs.COMMANDS:
        assert (ROOT / "jobs" / f"{command}.py").is_file()


def test_job_env_carries_wandb_mode_and_the_key_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert jobs.job_env() == {"WANDB_MODE": "offline"}
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert jobs.job_env() == {"WANDB_MODE": "online", "WANDB_API_KEY": "k" * 40}


@pytest.mark.parametrize(
    ("log", "line"),
    [
        (
            "[dotseg] run x\ndotseg train: error: train.lr: must be > 0, got -1\n",
            "dotseg train: error: train.lr: must be > 0, got -1",
        ),
        (
            'start\nTraceback (most recent call last):\n  File "x.py", line 1\n    boom()\nValueError: boom\n',
            "ValueError: boom",
        ),
        ("all good\nERROR something broke here\nbye\n", "ERROR something broke here"),
        ("nothing to see\n", None),
    ],
)
def test_a_failed_job_is_summed_up_by_its_failing_line(log: str, line: str | None) -> None:
    assert jobs.failing_line(log) == line


def test_client_errors_are_one_line(cli) -> None:
    r = cli("submit", "train", "--address", "127.0.0.1:8265")
    assert r.returncode == 2 and "the Jobs API address is the dashboard's" in r.stderr
    r = cli("jobs", "list", "--address", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert r.returncode == 2 and "cannot reach the Jobs API" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("jobs", "status", "--address", "http://127.0.0.1:9")
    assert r.returncode == 2 and "needs a submission id" in r.stderr
    r = cli("serve", "--detach")
    assert r.returncode == 2 and "needs --address" in r.stderr


MOUNTS = """/dev/sda1 / ext4 rw 0 0
server:/export /mnt/shared nfs4 rw 0 0
bucket /mnt/bucket fuse.gcsfuse rw 0 0
tmpfs /mnt/shared/tmp tmpfs rw 0 0
"""


def test_a_node_local_storage_path_is_refused_only_on_a_multi_machine_cluster() -> None:
    from dotseg.storage import StorageError, check_shared_storage, filesystem_type

    assert filesystem_type("/mnt/shared/runs", MOUNTS) == "nfs4"
    assert filesystem_type("/mnt/shared/tmp/x", MOUNTS) == "tmpfs"  # the longest mount point wins
    assert filesystem_type("/mnt/bucket", MOUNTS) == "fuse.gcsfuse"
    assert filesystem_type("/home/me/runs", MOUNTS) == "ext4"
    check_shared_storage("runs", ["127.0.0.1", "127.0.0.1"], "ext4")  # nodes on one machine share its disk
    check_shared_storage("/mnt/shared/runs", ["10.0.0.1", "10.0.0.2"], "nfs4")
    check_shared_storage("/mnt/bucket/runs", ["10.0.0.1", "10.0.0.2"], "fuse.gcsfuse")
    with pytest.raises(StorageError, match=r"node-local filesystem \(ext4\).*2 machines \(10\.0\.0\.1, 10\.0\.0\.2\)"):
        check_shared_storage("runs", ["10.0.0.1", "10.0.0.2", "10.0.0.2"], "ext4")


class _ClosingStream:
    """A Jobs API whose log stream closes (a dropped tunnel) while the job still runs: the job's
    statuses come from ``statuses`` one call at a time; ``broken`` makes the stream raise instead."""

    def __init__(self, statuses: list[str], final: str = "SUCCEEDED", broken: bool = False) -> None:
        self.statuses, self.final, self.broken = list(statuses), final, broken

    async def tail_job_logs(self, sid: str):
        yield "epoch 1/3 ...\n"
        if self.broken:
            raise ConnectionError("Connection reset by peer")

    def get_job_status(self, sid: str) -> str:
        return self.statuses.pop(0) if self.statuses else self.final

    def get_job_info(self, sid: str):
        class Info:
            status, message = self.final, "boom"

        return Info()

    def get_job_logs(self, sid: str) -> str:
        return "dotseg train: error: something\n"


@pytest.mark.parametrize(("final", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 130)])
@pytest.mark.parametrize("broken", [False, True])
def test_a_closed_log_stream_waits_for_the_job_to_end(final: str, code: int, broken: bool) -> None:
    """Issue 19: `dotseg submit` exited 0 when the log stream closed early while the job still ran."""
    c = _ClosingStream(["RUNNING", "RUNNING", "RUNNING"], final, broken)
    lines: list[str] = []
    jobs.follow("http://127.0.0.1:1", "dotseg-train-x", out=lines.append, client_=c, poll_s=0.01)
    assert not c.statuses, "it returned while the job was still RUNNING"
    assert any("waiting for it to end" in ln for ln in lines), lines
    assert any("stream of dotseg-train-x broke" in ln for ln in lines) is broken
    status = jobs.finish_line("http://127.0.0.1:1", "dotseg-train-x", out=lines.append, client_=c)
    assert jobs.exit_status(status) == code
