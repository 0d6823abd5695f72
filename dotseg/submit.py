"""Ray jobs: ``dotseg submit`` and ``dotseg jobs``, on Ray's Jobs API (``JobSubmissionClient``).

A submission uploads the project directory as the job's ``working_dir`` (leaving out what the job
does not need: git history, virtual environments, runs, W&B folders, checkpoints — Ray refuses
uploads over 100 MiB with an opaque error, ray#38566, so the size is checked here first) and runs
one of the thin entry points in ``jobs/`` on the cluster, which joins the cluster and calls the
``dotseg`` command. W&B's mode travels with the job (offline unless the user set another), and the
API key only when the user has one set. Logs stream back until the job ends; the exit status says
how it ended, and a failed job's error line is printed, not just FAILED.

Clusters dotseg starts or describes use token auth (``RAY_AUTH_MODE=token``); a client without the
token, or with a wrong one, gets one line saying which variables to set.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

#: ``dotseg submit COMMAND`` runs ``jobs/COMMAND.py`` on the cluster.
COMMANDS = ("train", "sweep", "evaluate", "serve", "predict")
#: Left out of the job's working_dir upload (gitignore-style patterns, as Ray reads them).
EXCLUDES = (
    ".git",
    ".venv",
    "venv",
    ".env",
    "runs",
    "wandb",
    "checkpoints",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "node_modules",
    "docs",
)
#: Ray's limit on a working_dir upload.
UPLOAD_LIMIT = 100 * 1024 * 1024

TOKEN_HELP = (
    "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or a file named by "
    "RAY_AUTH_TOKEN_PATH); cluster/local.sh writes it to /tmp/dotseg-local-cluster/token, a "
    "`ray up` cluster uses your ~/.ray/auth_token, KubeRay keeps it in the cluster's auth Secret"
)


class SubmitError(RuntimeError):
    """A job cannot be submitted or looked up; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Upload:
    root: Path
    files: int
    bytes: int
    largest: list[tuple[int, str]]


def project_root(start: Path | None = None) -> Path:
    """The directory to upload: the nearest one above ``start`` that holds ``jobs/`` and ``dotseg/``."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "jobs" / "train.py").is_file() and (d / "dotseg" / "__init__.py").is_file():
            return d
    raise SubmitError(
        f"{here} is not inside a dotseg project (no jobs/ and dotseg/ above it); run dotseg submit "
        f"from your clone of the project, which is what the job uploads"
    )


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(p, pat) for p in parts for pat in patterns)


def measure_upload(root: Path, excludes: tuple[str, ...] = EXCLUDES, limit: int = UPLOAD_LIMIT) -> Upload:
    """What the working_dir upload would hold; a :class:`SubmitError` naming the largest files if
    it is over Ray's limit."""
    total, count, sizes = 0, 0, []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not _excluded(rel_dir + d, excludes)]
        for name in filenames:
            rel = rel_dir + name
            if _excluded(rel, excludes):
                continue
            try:
                size = os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
            total, count = total + size, count + 1
            sizes.append((size, rel))
    largest = sorted(sizes, reverse=True)[:5]
    if total > limit:
        shown = ", ".join(f"{rel} ({size / 2**20:.1f} MiB)" for size, rel in largest)
        raise SubmitError(
            f"the job's working directory {root} would upload {total / 2**20:.0f} MiB, over Ray's "
            f"{limit // 2**20} MiB limit; the largest files: {shown}. Move them out of the "
            f"project or into one of the excluded folders ({', '.join(EXCLUDES[:6])}, ...)"
        )
    return Upload(root, count, total, largest)


def job_env() -> dict[str, str]:
    """Environment for the job: W&B's mode (offline unless set), and its key only if the user has one."""
    env = {"WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    for key in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def _config_arg(config: str | None, root: Path) -> list[str]:
    """``--config`` as the job will see it: a shipped config's name, or a path inside the upload."""
    if config is None:
        return []
    path = Path(config)
    if not path.exists():
        return ["--config", config]  # a shipped name (cpu, smoke, ...): resolved on the cluster
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        raise SubmitError(
            f"--config {config} is outside the project directory {root}, so the job would not have it; "
            f"copy it into the project (e.g. configs/) and submit again"
        ) from None
    if _excluded(rel.as_posix(), EXCLUDES):
        raise SubmitError(f"--config {config} is in a folder the upload leaves out ({rel.parts[0]}/); move it")
    return ["--config", rel.as_posix()]


def entrypoint(command: str, config: str | None, overrides: list[str], extra: list[str], root: Path) -> str:
    import shlex

    if command not in COMMANDS:
        raise SubmitError(f"unknown job {command!r}; one of {', '.join(COMMANDS)}")
    if command == "predict" and (config or overrides):
        raise SubmitError("dotseg predict takes no config: pass its options after --, e.g. -- --input s3://b/scans")
    args = [*_config_arg(config, root), *[a for o in overrides for a in ("--set", o)], *extra]
    return " ".join(shlex.quote(a) for a in ["python", f"jobs/{command}.py", *args])


def submission_id(command: str) -> str:
    return f"dotseg-{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def client(address: str) -> Any:
    """A Jobs API client for ``address`` (http://HEAD:8265); one-line errors for the usual mistakes."""
    from ray.job_submission import JobSubmissionClient

    if address and not re.match(r"^https?://", address):
        raise SubmitError(f"--address {address}: the Jobs API address is the dashboard's, e.g. http://127.0.0.1:8265")
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    # The client's own Ray lines (packaging notes per ignored file, "WebSocket closed") would bury
    # the job's; dotseg says what it uploads and how the job ended. Errors still show.
    for name in ("ray", "ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the last two set their own level
    try:
        return JobSubmissionClient(address)
    except Exception as e:
        raise SubmitError(_explain(e, address)) from None


def _explain(e: BaseException, address: str) -> str:
    text = " ".join(str(e).split())
    low = text.lower()
    if "authentication" in low or "401" in low or "unauthorized" in low or "token" in low:
        if "invalid or incorrect" in low or "401" in low or "unauthorized" in low:
            problem = "the cluster refused the authentication token (wrong token)"
        else:
            problem = "the cluster requires an authentication token and none was given"
        return f"{problem} at {address}: {TOKEN_HELP}"
    if "connection" in low or "failed to connect" in low or "refused" in low:
        return (
            f"cannot reach the Jobs API at {address} ({text[:160]}); is the cluster up, and the "
            f"dashboard port forwarded (ray dashboard cluster/aws.yaml, kubectl port-forward ... 8265)?"
        )
    return f"{address}: {text[:300]}"


def call(address: str, fn: Callable[[], Any]) -> Any:
    """Run a client call, turning its failures into one line."""
    try:
        return fn()
    except SubmitError:
        raise
    except Exception as e:
        raise SubmitError(_explain(e, address)) from None


def submit(
    address: str,
    command: str,
    config: str | None = None,
    overrides: list[str] | None = None,
    extra: list[str] | None = None,
    *,
    root: Path | None = None,
    wait: bool = True,
    out: Callable[[str], None] = print,
) -> tuple[str, str]:
    """Submit ``dotseg COMMAND`` as a Ray job; with ``wait``, stream its logs until it ends.

    Returns (submission id, final status — or PENDING/RUNNING without ``wait``)."""
    root = root or project_root()
    ep = entrypoint(command, config, list(overrides or ()), list(extra or ()), root)
    upload = measure_upload(root)
    c = client(address)
    sid = submission_id(command)
    call(
        address,
        lambda: c.submit_job(
            entrypoint=ep,
            submission_id=sid,
            runtime_env={"working_dir": str(root), "excludes": list(EXCLUDES), "env_vars": job_env()},
            entrypoint_num_cpus=0,
            metadata={"dotseg": command},
        ),
    )
    out(f"[dotseg] submitted {sid}: {ep}  ({upload.files} files, {upload.bytes / 2**20:.1f} MiB uploaded)")
    if not wait:
        out(f"[dotseg] follow it: dotseg jobs logs {sid} --address {address} --follow")
        return sid, str(call(address, lambda: c.get_job_status(sid)))
    follow(address, sid, out=out, client_=c)
    return sid, finish_line(address, sid, out=out, client_=c)


#: A job's states that do not change any more.
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def follow(
    address: str, sid: str, *, out: Callable[[str], None] = print, client_: Any = None, poll_s: float = 5.0
) -> None:
    """Stream a job's logs until it ends. The stream can close while the job still runs (a dropped
    tunnel or port-forward, a restarted dashboard): then poll its status until it ends, so whoever
    waits (``dotseg submit ... && next``) never goes on with an unfinished job."""
    c = client_ or client(address)

    async def tail() -> None:
        async for chunk in c.tail_job_logs(sid):
            for line in chunk.splitlines():
                out(line)

    try:
        call(address, lambda: asyncio.run(tail()))
    except SubmitError as e:
        out(f"[dotseg] the log stream of {sid} broke ({e}); polling its status instead")
    status = str(call(address, lambda: c.get_job_status(sid)))
    if status in TERMINAL:
        return
    out(f"[dotseg] the log stream closed while {sid} is {status}; waiting for it to end (status every {poll_s:g} s)")
    while status not in TERMINAL:
        time.sleep(poll_s)
        try:
            status = str(c.get_job_status(sid))
        except Exception as e:  # unreachable for a while: say so, keep waiting (Ctrl-C leaves the job running)
            out(f"[dotseg] cannot reach {address} ({_explain(e, address)}); retrying")


def failing_line(logs: str) -> str | None:
    """The line of a failed job's log that says what went wrong: dotseg's one-line error, else the
    exception line closing the last traceback, else the last line that mentions an error."""
    lines = [ln.rstrip() for ln in logs.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^dotseg [a-z]+: error: ", ln.strip()):
            return ln.strip()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback"):
            tail = [ln for ln in lines[i + 1 :] if not ln.startswith((" ", "\t"))]
            if tail:
                return tail[0].strip()
    errors = [ln for ln in lines if re.search(r"error", ln, re.I)]
    return errors[-1].strip() if errors else None


def finish_line(address: str, sid: str, *, out: Callable[[str], None] = print, client_: Any = None) -> str:
    """Print how the job ended (with its failing line if it failed); returns the status."""
    c = client_ or client(address)
    info = call(address, lambda: c.get_job_info(sid))
    status = str(info.status)
    if status == "FAILED":
        why = failing_line(call(address, lambda: c.get_job_logs(sid))) or (info.message or "").strip()
        out(f"[dotseg] {sid} FAILED: {why}")
    else:
        out(f"[dotseg] {sid} {status}")
    return status


def exit_status(status: str) -> int:
    return {"SUCCEEDED": 0, "STOPPED": 130, "PENDING": 0, "RUNNING": 0}.get(status, 1)


def list_jobs(address: str) -> list[dict[str, Any]]:
    c = client(address)
    jobs = call(address, c.list_jobs)
    rows = []
    for j in sorted(jobs, key=lambda j: j.start_time or 0):
        rows.append(
            {
                "id": j.submission_id or j.job_id,
                "status": str(j.status),
                "start": datetime.fromtimestamp((j.start_time or 0) / 1000).strftime("%Y-%m-%d %H:%M:%S"),
                "entrypoint": j.entrypoint,
            }
        )
    return rows


def stop_job(address: str, sid: str) -> bool:
    c = client(address)
    return bool(call(address, lambda: c.stop_job(sid)))


def logs(address: str, sid: str) -> str:
    c = client(address)
    return str(call(address, lambda: c.get_job_logs(sid)))
