"""Files a user keeps, written so that a kill at any moment leaves the old file or the new one,
never a cut one: a temporary file in the same directory, flushed to disk, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def _replacing(path: Path, mode: int) -> Iterator[BinaryIO]:
    """A file to write that becomes ``path`` (permissions ``mode``) only once it is whole on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp's 0600 would hide it from the other users of a shared directory
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, with permissions ``mode``."""
    with _replacing(Path(path), mode) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def copy_atomic(src: str | Path, dst: str | Path, mode: int = 0o644) -> None:
    """Copy ``src`` to ``dst`` atomically: a reader (a replica starting, a resumed run) sees the old
    file or the whole new one, and a kill mid-copy leaves the old one in place."""
    with open(src, "rb") as inp, _replacing(Path(dst), mode) as out:
        shutil.copyfileobj(inp, out, 1 << 20)
