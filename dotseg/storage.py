"""Where runs are stored: a directory, a mount every node shares, or a bucket (``s3://``, ``gs://``).

``train.storage_path`` is one of:

* a local directory: fine for one machine (all Ray nodes on one machine share its disk);
* a shared mount (NFS, EFS, Lustre, a FUSE bucket mount) at the same path on every node;
* a bucket URI, ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (any URI pyarrow's filesystems
  take). Ray Train writes checkpoints straight to it. The driver's own files (``config.yaml``, its
  logs, ``best.safetensors``, ``history.json``, ``curves.png``) are written in a local staging
  directory (:func:`staging_dir`) and uploaded to the run's URI: ``config.yaml`` as soon as the run
  starts, so that it can be resumed from the URI on any machine, and the rest when it ends or fails.

Credentials are never in a config: pyarrow finds them the way each cloud's SDK does (``AWS_*``
variables, ``~/.aws``, an instance role; ``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server).
An S3-compatible store (MinIO, Ceph, ...) is reached by setting ``AWS_ENDPOINT_URL``. On a cluster,
every node needs them (instance roles or the nodes' environment), not only the submitting machine.

A node-local directory on a cluster spanning machines is refused up front (ray#37177): checkpoints
written by a worker on one node would be missing on the others.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

#: Filesystem types (as /proc/mounts names them) that every node of a cluster can share.
SHARED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "glusterfs", "ceph", "9p", "virtiofs"}
)

#: Local copies of bucket runs and checkpoints (override with DOTSEG_CACHE_DIR).
CACHE_DIR = Path(os.environ.get("DOTSEG_CACHE_DIR", "~/.cache/dotseg")).expanduser()

CREDENTIALS_HELP = (
    "check the credentials every node uses (S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws or an "
    "instance role, and AWS_ENDPOINT_URL for an S3-compatible store; GCS: GOOGLE_APPLICATION_CREDENTIALS "
    "or the metadata server) and that the bucket exists"
)


class StorageError(ValueError):
    """A storage location that cannot be used; the message says why and what to do."""


# -- URIs -------------------------------------------------------------------------------------------


def is_uri(location: str | Path) -> bool:
    """A bucket (or other pyarrow filesystem) URI, as opposed to a path; ``file://`` counts as a path."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[1]


def filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem for ``uri`` and the path inside it; a one-line StorageError otherwise."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
        raise StorageError(f"{uri}: not a storage location pyarrow can open: {one_line(e)}") from None


def one_line(e: BaseException | str) -> str:
    """An error's message on one line (for the one-line errors users see); an empty one by its type."""
    text = " ".join(str(e).split())
    return text or (type(e).__name__ if isinstance(e, BaseException) else "")


def call(uri: str, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except StorageError:
        raise
    except FileNotFoundError:
        raise StorageError(f"{uri} does not exist") from None
    except Exception as e:
        raise StorageError(f"cannot {what} {uri}: {one_line(e)}; {CREDENTIALS_HELP}") from None


def exists(uri: str) -> bool:
    import pyarrow.fs

    fs, path = filesystem(uri)
    info = call(uri, "read", fs.get_file_info, path)
    return bool(info.type != pyarrow.fs.FileType.NotFound)


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)

    def read() -> str:
        with fs.open_input_stream(path) as f:
            return bytes(f.read()).decode()

    return str(call(uri, "read", read))


def check_writable(uri: str) -> None:
    """Write and delete a probe object under ``uri``: a wrong bucket or missing credentials fail
    here, in one line, not in a worker's traceback after the cluster has started training."""
    fs, path = filesystem(uri)
    probe = join(path, ".dotseg-write-probe")

    def write() -> None:
        with fs.open_output_stream(probe) as f:
            f.write(b"dotseg")
        fs.delete_file(probe)

    call(uri, "write to", write)


def upload(local: Path, uri: str) -> None:
    """Copy a file, or a directory's tree, to ``uri`` (objects are overwritten)."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    if local.exists():
        call(uri, "write to", pyarrow.fs.copy_files, str(local), path, pyarrow.fs.LocalFileSystem(), fs)


def download(uri: str, local: Path) -> Path:
    """Copy the object (or the prefix's tree) at ``uri`` to ``local`` (atomically: a reader never
    sees half of it; a directory fetched again replaces the old copy whole)."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(f"{local.name}.{os.getpid()}.part")  # replicas on one node may fetch together
    shutil.rmtree(part, ignore_errors=True)
    call(uri, "read", pyarrow.fs.copy_files, path, str(part), fs, pyarrow.fs.LocalFileSystem())
    if part.is_dir():  # os.replace does not replace a non-empty directory
        shutil.rmtree(local, ignore_errors=True)
    part.replace(local)
    return local


def staging_dir(uri: str) -> Path:
    """The local directory where this machine writes the files of the run at ``uri``."""
    scheme, _, rest = uri.partition("://")
    return CACHE_DIR / "staging" / scheme / rest.split("?")[0].strip("/")


def local_copy_path(uri: str) -> Path:
    """Where :func:`local_copy` puts ``uri``: named after it, in a cache folder of its own."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return CACHE_DIR / "files" / digest / name(uri.split("?")[0])


def local_copy(uri: str) -> Path:
    """A local copy of the file at ``uri``, fetched again each time (the object may have changed)."""
    return download(uri, local_copy_path(uri))


# -- clusters ----------------------------------------------------------------------------------------


def filesystem_type(path: str | Path, mounts: str | None = None) -> str:
    """The type of the filesystem holding ``path`` (the longest matching mount point in /proc/mounts)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    target = os.path.realpath(os.path.expanduser(str(path)))
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def check_shared_storage(
    path: str,
    node_hosts: list[str],
    fs_type: str | None = None,
    what: str = "train.storage_path",
    lost: str = "checkpoints written on one node would be missing on the others",
) -> None:
    """Refuse a node-local ``path`` (named ``what`` in the error) on a cluster whose nodes are on
    several machines: by default checkpoints written by a worker on one node would be missing on
    the others (ray#37177); ``lost`` says what would go wrong instead. Nodes on one
    machine (the same address) share its files; buckets, network filesystems and FUSE mounts are
    trusted."""
    hosts = sorted(set(node_hosts))
    if len(hosts) <= 1 or is_uri(path):
        return
    kind = fs_type or filesystem_type(path)
    if kind in SHARED_FILESYSTEMS or kind.startswith("fuse"):
        return
    raise StorageError(
        f"{what} {path!r} is on a node-local filesystem ({kind}) but the cluster's nodes are on "
        f"{len(hosts)} machines ({', '.join(hosts[:4])}{', ...' if len(hosts) > 4 else ''}): {lost}. "
        f"Set {what} to a bucket (s3://bucket/prefix, gs://bucket/prefix) or a shared mount (NFS, EFS, "
        f"Lustre, a FUSE bucket mount) present at the same path on every node"
    )


def cluster_hosts() -> list[str]:
    """The addresses of the alive nodes of the Ray cluster this process is connected to."""
    import ray

    return [str(n["NodeManagerAddress"]) for n in ray.nodes() if n.get("Alive")]
