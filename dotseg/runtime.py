"""Starting or joining Ray, in one place, with the settings every dotseg job needs.

Without an address an embedded local Ray is started for this process and stopped with it; with
an address (``auto``, ``ray://…`` or ``host:port``) the job joins that cluster. Environment that
workers must see (W&B mode, thread counts, the cluster address for Train's cleanup) goes through
the job's runtime_env, not the driver's environment, because workers on other nodes never see
the driver's.

``init_ray(quiet=True)`` keeps Ray's chatter out of the console; where dotseg's own log records go
is :mod:`dotseg.logs`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
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
