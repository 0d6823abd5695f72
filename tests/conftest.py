"""Shared fixtures. One Ray instance per test session, started only if a test asks for it."""

from __future__ import annotations

import os

import pytest

# Workers and the driver: W&B never tries the network from tests, torch does not oversubscribe 2 cores.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session (``ray.shutdown`` stops exactly the processes it started).

    4 logical CPUs on a 2-core machine so Train workers and Ray Data tasks can be scheduled side by
    side (with 2, a 2-worker run plus a synthesis task deadlocks without an error).
    """
    import ray

    from dotseg.runtime import init_ray

    init_ray(num_cpus=4, object_store_memory=1_000_000_000)
    yield ray
    ray.shutdown()
