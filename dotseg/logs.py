"""dotseg's log records: the console, Ray's driver log lines, and records from Ray workers.

dotseg's own lines are ``logging`` records of the ``dotseg`` loggers; the CLI prints them with
:func:`configure_console`. Ray's chatter stays out of the console: ``init_ray(quiet=True)``
(:mod:`dotseg.runtime`) keeps worker, Train controller and C++ core-worker output in the Ray
session's log files, and :func:`ray_logs_to` sends the driver's own Ray log records to a file.

Records that dotseg code logs inside Ray workers reach the driver through a JSON-lines file, not
through worker stdout: :func:`records_to` in the worker, :class:`RecordRelay` on the driver; for
``dotseg train``, whose workers may be on nodes that do not share the driver's disk, a
:class:`RecordSink` actor on the driver's node writes the file.

Why a file and not the stdlib's ``QueueHandler``/``QueueListener`` over a Ray queue: the file is
also the run's record (``worker_log.jsonl`` beside its checkpoints, read after a crash, and what a
sweep trial of the ``function`` style writes directly, with no actor at all); a queue would need
that file written beside it anyway, and a Ray queue is an actor just like the sink. The relay is
a thread that reads new complete lines every 0.2 s and re-emits them through the driver's loggers
of the same names, so whatever handles dotseg's records there (the console, a Tune trial's log)
shows them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
