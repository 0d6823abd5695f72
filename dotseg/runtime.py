"""Starting or joining Ray, in one place, with the settings every dotseg job needs.

Without an address an embedded local Ray is started for this process and stopped with it; with
an address (``auto``, ``ray://…`` or ``host:port``) the job joins that cluster. Environment that
workers must see (W&B mode, thread counts, the cluster address for Train's cleanup) goes through
the job's runtime_env, not the driver's environment, because workers on other nodes never see
the driver's.

Logging: dotseg's own lines are ``logging`` records of the ``dotseg`` loggers (the CLI prints them
with ``configure_console``). Ray's chatter stays out of the console: ``init_ray(quiet=True)`` keeps
worker, Train controller and C++ core-worker output in the Ray session's log files, and
``ray_logs_to`` sends the driver's own Ray log records to a file. Records that dotseg code logs
inside Ray workers reach the driver through a file, not through worker stdout: ``records_to`` in
the worker, ``RecordRelay`` on the driver; for ``dotseg train``, whose workers may be on nodes
that do not share the driver's disk, a ``RecordSink`` actor on the driver's node writes it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Variables forwarded from the driver to every worker when set.
FORWARDED_ENV = (
    "WANDB_MODE",
    "WANDB_API_KEY",
    "WANDB_DIR",
    "WANDB_SILENT",
    "WANDB_BASE_URL",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",
)


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    # W&B mode comes from train.wandb.mode (offline by default); an explicit WANDB_MODE is forwarded.
    env.setdefault("WANDB_SILENT", "true")
    # Torch in every worker would otherwise start one thread per core of the node, oversubscribing it.
    env.setdefault("OMP_NUM_THREADS", "1")
    # Train V2 patches print() in workers to also log it, which shows every line twice on the driver.
    env.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    env.update(extra or {})
    return env


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = True,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Connect to ``address`` or start a local Ray; returns ``ray.cluster_resources()``.

    ``quiet`` (the default) leaves the stdout/stderr of every Ray process (workers, the Train
    controller, C++ core-worker lines) in the session's log files instead of echoing it on this
    console (``log_to_driver``), and the driver's ``ray`` logger at WARNING; ``kwargs`` go to
    ``ray.init`` and override both. A no-op when Ray is already initialized in this process (tests
    start one per session): then whoever started it chose these settings.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    runtime_env = {"env_vars": worker_env(env)}
    # Inside a Ray job (dotseg submit), the job's runtime_env already sets some of these variables
    # (WANDB_MODE, ...) and Ray refuses a driver env that names the same keys; the job's win.
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    taken = set((job.get("runtime_env") or {}).get("env_vars") or {})
    runtime_env["env_vars"] = {k: v for k, v in runtime_env["env_vars"].items() if k not in taken}
    settings: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": logging.WARNING if quiet else logging.INFO}
    settings.update(kwargs)
    if address:
        # Ray 2.60 clusters use token auth; a client with an explicit address must opt in.
        if os.path.exists(os.path.expanduser("~/.ray/auth_token")) or "RAY_AUTH_TOKEN" in os.environ:
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        runtime_env["env_vars"]["RAY_ADDRESS"] = address
        with _single_machine() if _loopback_only(address) else contextlib.nullcontext():
            ray.init(address=address, runtime_env=runtime_env, **settings)
    else:
        settings.setdefault("_node_ip_address", LOOPBACK)
        with _single_machine():
            ray.init(
                num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=True, configure_logging=True, **settings
            )
        _private_token()
    node = getattr(ray._private.worker, "_global_node", None)  # None for ray:// clients
    if node is not None:
        logging.getLogger("ray.dotseg").info(
            f"Ray session logs (workers, Train controller, core workers): {node.get_logs_dir_path()}"
        )
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.cluster_resources()


LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _single_machine() -> Iterator[None]:
    """An embedded Ray is one machine's, so it listens on loopback only. Ray 2.60 turns a node IP of
    127.0.0.1 into the machine's routable address unless it believes multi-node clusters are off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, meant for laptops): then the GCS, raylet, workers,
    agents and Serve's actors bind 127.0.0.1 (``ss -ltn``, tests/test_cli_serve.py). Set only while
    Ray starts (its processes inherit it), so a ``ray start`` this process runs later can still
    join a real cluster."""
    from ray._private import ray_constants

    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    old_env, old_flag = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import; this process imported Ray already
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env


def _loopback_only(address: str) -> bool:
    """Whether ``address`` (host:port) is a Ray that answers on loopback only, as an embedded one
    does: a Ray client would otherwise turn 127.0.0.1 into this machine's routable address, where
    nothing listens, and wait there forever."""
    import socket

    host, _, port = address.rpartition(":")
    if host not in (LOOPBACK, "localhost") or not port.isdigit():
        return False
    from ray._private.services import node_ip_address_from_perspective

    def answers(ip: str) -> bool:
        with socket.socket() as s:
            s.settimeout(2)
            return s.connect_ex((ip, int(port))) == 0

    routable = node_ip_address_from_perspective()
    return routable != LOOPBACK and answers(LOOPBACK) and not answers(routable)


def replica_grpc_on_loopback() -> None:
    """In a Serve replica on a loopback node: Ray 2.60 starts each replica's inter-deployment gRPC
    server, which takes no token, on ``[::]:0``, every interface, whatever the node's address
    (``ray.serve._private.replica``, hard-coded). Where the node is 127.0.0.1 (an embedded Ray, or a
    cluster on one machine), bind it to 127.0.0.1 instead, as everything else on that node is. The
    test of what listens (tests/test_cli_serve.py) fails loudly if a new Ray moves this."""
    import ray

    try:
        from ray.serve._private import replica
    except ImportError:  # another Ray layout: nothing to patch; the listeners test says what listens
        return
    original = replica.add_port_to_grpc_server
    if getattr(original, "_dotseg", False):
        return

    def add_port(server: Any, address: str) -> int:
        if address.startswith("[::]:") and ray.util.get_node_ip_address() == LOOPBACK:
            address = f"{LOOPBACK}:{address.rpartition(':')[2]}"
        return original(server, address)

    add_port._dotseg = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port


def _private_token() -> None:
    """Ray 2.60 writes the token of the cluster it starts to ~/.ray/auth_token world-readable (0644):
    any local user could then drive the cluster. Only its owner may read it."""
    token = Path.home() / ".ray" / "auth_token"
    try:
        if token.is_file() and token.stat().st_mode & 0o077:
            token.chmod(0o600)
    except OSError as e:  # not ours to change (another user's home, a read-only mount): say so
        logging.getLogger(__name__).warning(f"could not make {token} private (chmod 600): {e}")


# -- logging ------------------------------------------------------------------------------------

#: Ray's own format for its driver-side log lines.
RAY_LOG_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@contextlib.contextmanager
def ray_logs_to(path: Path, console: bool = False) -> Iterator[None]:
    """While inside, the driver's Ray log records (``ray`` and every ``ray.*`` logger with handlers
    of its own, such as ``ray.data``) are appended to ``path`` at INFO and above, and reach the
    console only if ``console``. Pass ``logging_level=logging.INFO`` to ``init_ray`` inside, or
    ``ray.init`` lowers the ``ray`` logger to WARNING again."""
    import ray.data  # noqa: F401  (configures the ray logger, and ray.data's with a console handler of its own)

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(RAY_LOG_FORMAT))
    handler.setLevel(logging.INFO)  # ray.data logs DEBUG to its own session file
    saved = []
    for name in sorted(n for n in logging.Logger.manager.loggerDict if n == "ray" or n.startswith("ray.")):
        logger = logging.getLogger(name)
        if not (logger.handlers or name == "ray"):
            continue  # propagates to ray's handlers
        saved.append((logger, list(logger.handlers), logger.level))
        if not console:
            for h in [h for h in logger.handlers if _is_console(h)]:
                logger.removeHandler(h)
        if name == "ray" or not logger.propagate:
            logger.addHandler(handler)
        if name == "ray":
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, handlers, level in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
        handler.close()


class _ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (pytest and redirections swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class _ConsoleFormatter(logging.Formatter):
    """``[dotseg] message``; warnings and errors as ``[dotseg] WARNING: message``."""

    def format(self, record: logging.LogRecord) -> str:
        tag = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        return f"[dotseg] {tag}{super().format(record)}"


def configure_console(level: int = logging.INFO) -> logging.Handler:
    """Print the ``dotseg`` loggers' records at ``level`` and above on stdout as plain
    ``[dotseg] ...`` lines: what the CLI does. Calling it again replaces the previous handler."""
    logger = logging.getLogger("dotseg")
    for h in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(h)
    handler = _ConsoleHandler()
    handler.setFormatter(_ConsoleFormatter("%(message)s"))
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(min(level, logging.INFO))
    return handler


def _append(path: str | Path, line: str) -> None:
    # Opened per line: ranks on one node append side by side, and a reader on another node of a
    # shared filesystem sees each line once it is closed.
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class _JsonLinesHandler(logging.Handler):
    """Hands each record as one JSON line (logger name, level, message, time, pid) to ``write``:
    appending it to a file, or sending it to a :class:`RecordSink`."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__()
        self.write = write
        self.setFormatter(logging.Formatter("%(message)s"))  # plus the traceback, if any

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "relayed", False):
            return  # relayed here from this very file (driver and worker in one process): no loop
        try:
            self.write(
                json.dumps(
                    {
                        "name": record.name,
                        "levelno": record.levelno,
                        "levelname": record.levelname,
                        "msg": self.format(record),
                        "created": record.created,
                        "process": record.process,
                    }
                )
            )
        except Exception:
            self.handleError(record)


def _sink_writer(name: str) -> Callable[[str], None]:
    import ray

    sink = ray.get_actor(name)

    def write(line: str) -> None:
        # Waited for: a rank's last lines must be in the file before the run's fit() returns.
        ray.get(sink.append.remote(line), timeout=60)

    return write


class RecordSink:
    """A Ray actor on the driver's node that appends the lines workers on any node send it to the
    file the driver's :class:`RecordRelay` reads, so that no disk needs to be shared between them
    (a bucket run's is not); see :func:`start_record_sink`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, line: str) -> None:
        _append(self.path, line)


def start_record_sink(path: Path) -> tuple[str, Any]:
    """Start a :class:`RecordSink` for ``path`` on this process's node: its name (for the workers'
    :func:`records_to`) and its handle (keep it: the actor lives while the handle does)."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = f"dotseg-records-{uuid.uuid4().hex[:12]}"
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(num_cpus=0)(RecordSink).options(name=name, scheduling_strategy=here).remote(str(path))
    ray.get(actor.__ray_ready__.remote())  # type: ignore[union-attr]
    return name, actor


@contextlib.contextmanager
def records_to(target: Path | str, logger_name: str = "dotseg") -> Iterator[None]:
    """In a Ray worker: records of ``logger_name`` and its children, INFO and above, go to the file
    ``target`` (JSON lines; a Path) or to the :class:`RecordSink` actor named ``target`` (a str), for
    a ``RecordRelay`` on the driver, and not to the worker's stdout/stderr, which holds Ray's
    chatter and stays in the session's log files."""
    logger = logging.getLogger(logger_name)
    write = _sink_writer(target) if isinstance(target, str) else functools.partial(_append, target)
    handler = _JsonLinesHandler(write)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


class RecordRelay:
    """On the driver, while inside: re-emits the records that workers append to ``path``
    (``records_to``) through this process's loggers of the same names, in order, so that
    whatever handles dotseg's records here (the CLI's console, a Tune trial's log) shows them.
    Only records written after entering are relayed (a resumed run's file has older ones)."""

    def __init__(self, path: Path, interval_s: float = 0.2) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._pos = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RecordRelay:
        self._pos = self.path.stat().st_size if self.path.exists() else 0
        self._thread = threading.Thread(target=self._run, name="dotseg-record-relay", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()  # whatever the workers wrote last

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # complete lines only; a partial one is read next time
        self._pos += end
        for line in data[:end].splitlines():
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            logger = logging.getLogger(fields.get("name", "dotseg"))
            if logger.isEnabledFor(fields.get("levelno", logging.INFO)):
                logger.handle(logging.makeLogRecord({**fields, "relayed": True}))
