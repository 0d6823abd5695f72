"""scripts/bayes_ceiling.py replays the seed's generator exactly, or its ceiling means nothing.

The script re-draws each shape's parameters from the generator's geometry stream and samples a
posterior over them; if the generator's draws or outline code changed without the script, the
posterior would be over some other generator's shapes. These check the replay against the
generator's own masks, and that the posterior's support is what the dots allow.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from dotseg.evaluation import EVAL_SEED
from dotseg.synthesis import SynthesisConfig, make_sample

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bayes_ceiling.py"
CFG = SynthesisConfig(size=512)


@pytest.fixture(scope="module")
def ceiling():
    spec = importlib.util.spec_from_file_location("bayes_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_placement(count: int) -> list[tuple[int, object]]:
    found, index = [], 0
    while len(found) < count:
        sample = make_sample(CFG, EVAL_SEED + 1, index, noisy=False)
        if sample.meta["placement"] == "random":
            found.append((index, sample))
        index += 1
    return found


def test_the_replayed_shapes_are_the_generators(ceiling) -> None:
    for k, (index, sample) in enumerate(_random_placement(40)):
        n_control, theta = ceiling.true_theta(CFG, EVAL_SEED + 1, index)
        assert n_control == sample.meta["n_control"]
        centres = sample.dots[:, :2].astype(np.int64)
        problem = ceiling.Problem(CFG, n_control, centres)
        if k < 4:  # rasterizing is the slow part
            assert np.array_equal(problem.mask(theta), sample.mask.astype(bool))
        # Dots on the drawn outline's pixels, just outside the continuous curve, must count as in:
        # sample 19 has one 0.26 px beyond the tolerance of the continuous test.
        assert math.isfinite(problem.log_post(theta)), f"sample {index}: the true shape must hold its own dots"


def test_the_posterior_refuses_shapes_that_leave_a_dot_out(ceiling) -> None:
    index, sample = _random_placement(1)[0]
    n_control, theta = ceiling.true_theta(CFG, EVAL_SEED + 1, index)
    problem = ceiling.Problem(CFG, n_control, sample.dots[:, :2].astype(np.int64))
    shrunk = theta.copy()
    shrunk[0] = problem.lo[0]  # the smallest radius the prior allows: most dots fall outside
    assert problem.log_post(shrunk) == -math.inf
    outside = theta.copy()
    outside[1] = 2.0  # irregularity beyond the prior's range
    assert problem.log_post(outside) == -math.inf


def test_a_short_chain_from_the_dots_alone_predicts_a_mask(ceiling) -> None:
    index, sample = _random_placement(1)[0]
    n_control, _ = ceiling.true_theta(CFG, EVAL_SEED + 1, index)
    problem = ceiling.Problem(CFG, n_control, sample.dots[:, :2].astype(np.int64))
    rng = np.random.default_rng(0)
    start = ceiling.start_from_dots(problem, rng)
    draws = ceiling.sample_posterior(problem, start, rng, sweeps=12, burn=6, thin=2)
    assert len(draws) == 3 and all(math.isfinite(problem.log_post(t)) for t in draws)
    pred, expected, threshold, q = ceiling.bayes_prediction(problem, draws)
    assert pred.shape == (512, 512) and pred.any()
    assert 0.0 < expected <= 1.0 and 0.3 <= threshold <= 0.7
    assert ceiling.on_coarse_grid(q, threshold).shape == (512, 512)
