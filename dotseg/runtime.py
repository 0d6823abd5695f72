"""Starting or joining Ray, in one place, with the settings every dotseg job needs.

Without an address an embedded local Ray is started for this process and stopped with it; with
an address (``auto``, ``ray://…`` or ``host:port``) the job joins that cluster. Environment that
workers must see (W&B mode, thread counts, the cluster address for Train's cleanup) goes through
the job's runtime_env, not the driver's environment, because workers on other nodes never see
the driver's.
"""

from __future__ import annotations

import logging
import os
from typing import Any

#: Variables forwarded from the driver to every worker when set.
FORWARDED_ENV = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_SILENT", "WANDB_BASE_URL",
                 "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S")


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


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True,
             env: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Connect to ``address`` or start a local Ray; returns ``ray.cluster_resources()``.

    A no-op when Ray is already initialized in this process (tests start one per session).
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    runtime_env = {"env_vars": worker_env(env)}
    if address:
        # Ray 2.60 clusters use token auth; a client with an explicit address must opt in.
        if os.path.exists(os.path.expanduser("~/.ray/auth_token")) or "RAY_AUTH_TOKEN" in os.environ:
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        runtime_env["env_vars"]["RAY_ADDRESS"] = address
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=not quiet,
                 logging_level=logging.WARNING if quiet else logging.INFO, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=True,
                 log_to_driver=not quiet, logging_level=logging.WARNING if quiet else logging.INFO,
                 configure_logging=True, **kwargs)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.cluster_resources()
