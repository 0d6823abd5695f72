"""Tune's state files: kept whole across a kill, put back whole before ``--resume``.

Tied to Ray Tune's private layout (Ray 2.60): the file names in :data:`STATE_FILES` and the staging
directory in :func:`_staging_copies`. ``tests/test_sweep.py`` checks both after a real sweep and
fails naming the Ray version when Tune moves them.
"""

from __future__ import annotations

import json
import os
import pickletools
import tempfile
import time
from pathlib import Path

from dotseg.files import write_atomic
from dotseg.tuning.layout import SweepError

#: Tune's state files in the sweep directory, per driver session: the experiment state (JSON) and
#: the searcher's (a pickle). Tune rewrites them in place (a copy from its staging directory, every
#: second here), so a driver killed mid-copy leaves one cut short, and Tune, failing to read it,
#: would restart the sweep from nothing: new trials with the base config, over the finished trials'
#: directories. --resume puts back a whole set: Tune's staging copy, or the set the driver kept.
STATE_FILES = ("experiment_state-*.json", "basic-variant-state-*.json")
STATE_BACKUP = ".state-backup"


def _state_files(directory: Path) -> list[Path]:
    return sorted(p for pattern in STATE_FILES for p in directory.glob(pattern))


def _whole(path: Path) -> bytes | None:
    """The file's bytes if they are complete (a cut copy is not), else None. The searcher's state
    is a pickle despite its name: its opcodes are walked to the end, nothing is unpickled."""
    try:
        data = path.read_bytes()
        if data[:1] == b"\x80":  # a pickle's protocol opcode
            ops = list(pickletools.genops(data))
            if not ops or ops[-1][0].name != "STOP":
                return None
        else:
            json.loads(data)
    except (OSError, ValueError):
        return None
    return data


def back_up_state(sweep_dir: Path, seen: dict[str, int], settle_s: float = 0.05) -> None:
    """Copy Tune's state files into ``.state-backup/`` when they changed since ``seen`` (name ->
    mtime), all together and only as a set that is whole and at rest: the experiment state and the
    searcher's must be from the same save, or a resumed sweep could lose or repeat a trial."""
    try:
        paths = _state_files(sweep_dir)
        before = {p.name: p.stat().st_mtime_ns for p in paths}
        if not paths or all(seen.get(n) == m for n, m in before.items()):
            return
        if time.time_ns() - max(before.values()) < settle_s * 1e9:  # Tune may be copying them now
            return
        data = {p.name: _whole(p) for p in paths}
        if any(d is None for d in data.values()) or before != {p.name: p.stat().st_mtime_ns for p in paths}:
            return  # the next look gets a whole set
    except OSError:
        return
    backup = sweep_dir / STATE_BACKUP
    backup.mkdir(exist_ok=True)
    for name, d in data.items():
        if seen.get(name) != before[name]:
            assert d is not None
            write_atomic(backup / name, d)
    seen.update(before)


def _staging_copies(sweep_dir: Path) -> list[Path]:
    """Tune's own staging directories for a sweep of this name on this machine, newest first
    (``<ray temp>/session_*/artifacts/<time>/<name>/driver_artifacts``): the driver writes its state
    there before copying it to the sweep directory, so a copy cut by a kill is whole there."""
    roots = {Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray", Path("/tmp/ray")}
    found = [d for root in roots for d in root.glob(f"session_*/artifacts/*/{sweep_dir.name}/driver_artifacts")]
    return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)


def repair_state(sweep_dir: Path) -> tuple[list[str], str]:
    """Before --resume: if a kill cut any of Tune's state files short, put back a whole set of them
    (the cut file and its partners from the same save); returns the names put back and where they
    came from. First choice: Tune's staging copy on this machine (its latest state); else the set
    the driver kept. A cut file with neither is an error: Tune would start over."""
    current = {p.name: _whole(p) for p in _state_files(sweep_dir)}
    cut = [name for name, data in current.items() if data is None]
    if not cut:
        return [], ""
    sources = [(d, "Ray's staging copy on this machine") for d in _staging_copies(sweep_dir)]
    sources.append((sweep_dir / STATE_BACKUP, "the last whole copy the driver kept"))
    for source, what in sources:
        kept = {p.name: _whole(p) for p in _state_files(source)}
        if any(d is None for d in kept.values()) or any(name not in kept for name in cut):
            continue
        restored = []
        for name, data in kept.items():
            assert data is not None
            if current.get(name) != data:
                write_atomic(sweep_dir / name, data)
                restored.append(name)
        return restored, what
    raise SweepError(
        f"{sweep_dir / cut[0]} was cut short when the sweep's driver was killed and no whole copy of it was "
        f"kept; delete it to resume from the state before it (trials since then run again)"
    )


def layout_problems(sweep_dir: Path) -> list[str]:
    """What this module relies on of Tune's private layout and did not find after a sweep ran in
    ``sweep_dir`` on this machine (empty: the layout is the one it was written for)."""
    problems = [f"no {pattern} in the sweep directory" for pattern in STATE_FILES if not any(sweep_dir.glob(pattern))]
    if not _staging_copies(sweep_dir):
        problems.append(f"no staging copy at <ray temp>/session_*/artifacts/*/{sweep_dir.name}/driver_artifacts")
    return problems
