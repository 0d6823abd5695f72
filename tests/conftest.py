"""Shared fixtures. One Ray instance per test session, started only if a test asks for it."""

from __future__ import annotations

import os

import pytest

# Workers and the driver: W&B never tries the network from tests, torch does not oversubscribe 2 cores.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
# Train's controller polls its workers every 2 s, so every fit() ended up to 2 s after its last
# epoch and started a poll or two late: ~5 s of each smoke fit's ~20 s (Ray reads it in the processes
# the session's Ray and the clusters' `ray start` inherit this environment in).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# The user cache (exported engines, precision-gate records) of the tests, not the developer's: a
# gate this machine's user passed must not switch the tests' shipped model to bf16. Kept between
# runs (the ONNX export takes ~15 s), fresh on a new clone like CI's.
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "xdg"))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session (``ray.shutdown`` stops exactly the processes it started),
    its Serve on the HAProxy ingress as ``dotseg serve`` starts it (``DOTSEG_TEST_INGRESS=proxy``: the
    Python proxy; the cluster tests run that one).

    4 logical CPUs on a 2-core machine so Train workers and Ray Data tasks can be scheduled side by
    side (with 2, a 2-worker run plus a synthesis task deadlocks without an error).
    """
    import ray

    from dotseg.runtime import init_ray

    if os.environ.get("DOTSEG_TEST_INGRESS", "haproxy") == "haproxy":  # as `dotseg serve` starts it
        from dotseg.serving.run import haproxy_env

        haproxy_env()
    init_ray(num_cpus=4, object_store_memory=1_000_000_000)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model (base 4, depth 3, 64 px) with random weights, saved once per session: enough
    where what is tested is shapes, files and bookkeeping, not masks."""
    import torch

    from dotseg.checkpoint import save_checkpoint
    from dotseg.config import Config
    from dotseg.models import build_model

    cfg = Config().replace(**{"model.base_channels": 4, "model.depth": 3, "synthesis.size": 64})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, model, cfg, threshold=0.5, metrics={"val_dice": 0.5}, epoch=1)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``dotseg ARGS...`` in this process (``dotseg.cli.main``), as a subprocess would be run:
    returns a ``CompletedProcess`` with the exit status and the captured stdout and stderr. In-process
    saves an interpreter start per call; tests that are about the process itself use subprocess."""
    import subprocess

    import torch

    from dotseg.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        threads = torch.get_num_threads()  # --threads N is process-wide: do not leak it into other tests
        capsys.readouterr()
        try:
            code = main(list(args))
        finally:
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["dotseg", *args], code, out.out, out.err)

    return run


# Tests whose fixtures need a real Ray cluster or started server: marked by what they use, so
# `make check` (-m "not ray and not slow") leaves them out without a marker to forget.
_RAY_FIXTURES = {"ray_session", "cluster"}  # fixturenames is transitive: app, smoke, ... use these


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
    # Tests that start a Ray of their own (a cluster, `dotseg serve`) run first, before the session's
    # Ray exists: they skip beside it (two Rays on 2 cores must never run side by side), and file
    # names alone once let a new module put the session's Ray first and skip them all.
    items.sort(key=lambda item: 0 if item.get_closest_marker("own_ray") else 1)
