"""Synthesis: the exact distribution, determinism, and the metadata every later part relies on."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage, stats

from dotseg.normalize import normalize
from dotseg.synthesis import SynthesisConfig, make_batch, make_sample, snr_db
from dotseg.synthesis.noise import _NORMAL_TABLE, PARAM, add_normal

CFG = SynthesisConfig()
SMALL = CFG.replace(size=128)


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# -- determinism ----------------------------------------------------------------------------------


def test_same_bytes_in_another_process_and_any_batch_size() -> None:
    indices = list(range(100, 132))
    batch32 = make_batch(CFG, 7, indices, noise_scale=1.0, mixed_prob=0.5)
    ones = [make_batch(CFG, 7, [i], noise_scale=1.0, mixed_prob=0.5) for i in indices]
    for j, one in enumerate(ones):
        assert one["image"][0].tobytes() == batch32["image"][j].tobytes()
        assert one["mask"][0].tobytes() == batch32["mask"][j].tobytes()
        assert one["snr_db"][0] == batch32["snr_db"][j]
    # make_sample is the one-sample form of the same thing.
    s = make_sample(CFG, 7, indices[5], noise_scale=1.0, mixed_prob=0.5)
    assert s.image.tobytes() == batch32["image"][5].tobytes()
    # A fresh interpreter (new process, fresh module state and scratch buffers) agrees byte for byte.
    code = (
        "import hashlib,numpy as np\n"
        "from dotseg.synthesis import SynthesisConfig, make_batch\n"
        f"b = make_batch(SynthesisConfig(), 7, {indices!r}, noise_scale=1.0, mixed_prob=0.5)\n"
        "h = hashlib.sha256(); h.update(b['image'].tobytes()); h.update(b['mask'].tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(batch32["image"], batch32["mask"])


def test_order_and_batch_neighbours_do_not_matter() -> None:
    a = make_batch(SMALL, 3, [5, 6, 7], noise_scale=0.7, mixed_prob=0.4)
    b = make_batch(SMALL, 3, [7, 99, 5], noise_scale=0.7, mixed_prob=0.4)
    assert a["image"][0].tobytes() == b["image"][2].tobytes()
    assert a["image"][2].tobytes() == b["image"][0].tobytes()
    c = make_batch(SMALL, 4, [5], noise_scale=0.7, mixed_prob=0.4)
    assert c["image"][0].tobytes() != a["image"][0].tobytes()  # the seed matters


def test_clean_copy_shares_geometry_and_noise_knobs_do_not_move_it() -> None:
    noisy = make_sample(SMALL, 1, 3, noise_scale=1.0, mixed_prob=1.0)
    clean = make_sample(SMALL, 1, 3, noisy=False)
    other = make_sample(SMALL, 1, 3, noise_scale=0.1, mixed_prob=0.0)
    assert np.array_equal(noisy.mask, clean.mask) and np.array_equal(noisy.mask, other.mask)
    assert np.array_equal(noisy.dots, clean.dots)
    assert clean.meta["noise"] == "none" and math.isinf(clean.snr_db)
    assert set(np.unique(clean.image)) <= {0.0, 1.0}
    assert noisy.meta["snr_db"] == pytest.approx(snr_db(noisy.image, clean.image))


# -- the distribution over 2,000 samples -----------------------------------------------------------


@pytest.fixture(scope="module")
def many() -> dict[str, np.ndarray]:
    """Metadata of 2,000 full-size samples at noise_scale=1, plus per-sample geometry checks
    (made chunk by chunk so the test does not hold 2.6 GB of images)."""
    cols: dict[str, list] = {}
    for start in range(0, 2000, 100):
        b = make_batch(CFG, 2024, range(start, start + 100), noise_scale=1.0, mixed_prob=0.3)
        checks = {"one_region": [], "no_holes": [], "inside_frame": [], "dots_ok": [], "area_ok": []}
        for i, m in enumerate(b["mask"].astype(bool)):
            checks["one_region"].append(ndimage.label(m)[1] == 1)  # 4-connectivity
            checks["no_holes"].append(np.array_equal(ndimage.binary_fill_holes(m), m))
            checks["inside_frame"].append(not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()))
            dots = b["dots"][i][~np.isnan(b["dots"][i][:, 0])]
            ys, xs = dots[:, 0].astype(int), dots[:, 1].astype(int)
            checks["dots_ok"].append(
                len(dots) == b["n_dots"][i]
                and bool(m[ys, xs].all())
                and bool(((dots[:, 2] >= CFG.dots.radius[0]) & (dots[:, 2] <= CFG.dots.radius[1])).all())
            )
            checks["area_ok"].append(int(m.sum()) == b["area"][i])
        for k, v in list(checks.items()) + [(k, b[k]) for k in b if k not in ("image", "mask", "dots")]:
            cols.setdefault(k, []).extend(list(v))
    return {k: np.array(v) for k, v in cols.items()}


def test_every_noise_type_occurs_and_snr_spans_the_range(many: dict[str, np.ndarray]) -> None:
    kinds = set()
    for name in many["noise"]:
        kinds.update(str(name).split("+"))
    assert kinds == {"gaussian", "poisson", "salt_pepper", "speckle"}
    mixed = np.char.count(many["noise"].astype(str), "+") > 0
    assert 0.2 < mixed.mean() < 0.4  # mixed_prob = 0.3
    assert set(np.char.count(many["noise"][mixed].astype(str), "+")) == {1, 2}  # 2-3 types
    snr = many["snr_db"]
    assert snr.max() > 30 and snr.min() < 0
    assert np.isfinite(snr).all()


def test_masks_are_one_simply_connected_region_inside_the_frame(many: dict[str, np.ndarray]) -> None:
    assert many["one_region"].all()
    assert many["no_holes"].all()
    assert many["inside_frame"].all()
    assert many["area_ok"].all()


def test_dots_in_range_and_centres_inside_the_mask(many: dict[str, np.ndarray]) -> None:
    lo, hi = CFG.dots.count
    assert ((many["n_dots"] >= lo) & (many["n_dots"] <= hi)).all()
    assert set(many["placement"]) == {"random", "lattice"}
    assert many["dots_ok"].all()


def test_shape_parameters_recorded_and_in_range(many: dict[str, np.ndarray]) -> None:
    assert set(np.unique(many["n_control"])) == set(range(5, 16))
    r = many["shape_radius"]
    assert (r <= CFG.shape.radius[1] + 1e-6).all() and r.max() - r.min() > 0.1


def test_dot_radius_scales_with_image_size() -> None:
    s = make_sample(CFG.replace(size=256), 0, 0, noisy=False)
    assert (s.dots[:, 2] >= 1.0).all() and (s.dots[:, 2] <= 3.0).all()


# -- noise models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gaussian", "poisson", "salt_pepper", "speckle"])
def test_noise_scale_bounds_each_parameter(kind: str) -> None:
    mild, harsh = getattr(CFG.noise, PARAM[kind])
    b = make_batch(SMALL, 0, range(200), noise_scale=0.3, noise_types=(kind,))
    values = b[PARAM[kind]]
    bound = mild + 0.3 * (harsh - mild)
    lo, hi = min(mild, bound), max(mild, bound)
    assert ((values >= lo - 1e-6) & (values <= hi + 1e-6)).all()
    assert values.max() - values.min() > 0.5 * (hi - lo)  # and actually spans that range
    zero = make_batch(SMALL, 0, range(5), noise_scale=0.0, noise_types=(kind,))
    assert np.allclose(zero[PARAM[kind]], mild)


def test_noise_models_match_their_definitions() -> None:
    cfg = CFG.replace(size=256)
    clean = make_sample(cfg, 5, 0, noisy=False).image
    sig = clean > 0
    g = make_sample(cfg, 5, 0, noise_types=("gaussian",), severity=0.5)
    sigma = g.meta["gaussian_sigma"]
    assert (g.image - clean).std() == pytest.approx(sigma, rel=0.02)
    p = make_sample(cfg, 5, 0, noise_types=("poisson",), severity=0.9)
    lam = p.meta["poisson_lambda"]
    assert np.array_equal(p.image[~sig], clean[~sig])  # Poisson of 0 is 0
    assert p.image[sig].mean() == pytest.approx(1.0, abs=4 / math.sqrt(lam * sig.sum()))
    assert np.allclose(p.image[sig] * lam, np.round(p.image[sig] * lam), atol=1e-3)  # counts / lambda
    sp = make_sample(cfg, 5, 0, noise_types=("salt_pepper",), severity=0.5)
    frac = sp.meta["salt_pepper_p"]
    changed_bg = (sp.image[~sig] == 1.0).mean()  # salt on the background
    assert changed_bg == pytest.approx(frac / 2, rel=0.05)
    assert set(np.unique(sp.image)) <= {0.0, 1.0}
    sk = make_sample(cfg, 5, 0, noise_types=("speckle",), severity=0.5)
    assert np.array_equal(sk.image[~sig], clean[~sig])  # multiplicative: zero stays zero
    assert (sk.image[sig] - 1.0).std() == pytest.approx(sk.meta["speckle_sigma"], rel=0.08)


def test_mixed_prob_extremes() -> None:
    none = make_batch(SMALL, 0, range(100), mixed_prob=0.0)
    assert not any("+" in str(n) for n in none["noise"])
    all_ = make_batch(SMALL, 0, range(100), mixed_prob=1.0)
    assert all("+" in str(n) for n in all_["noise"])


def test_standard_normal_table_is_normal() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros(200_000, dtype=np.float32)
    add_normal(rng, x, 1.0)
    assert abs(x.mean()) < 0.01 and x.std() == pytest.approx(1.0, abs=0.01)
    assert stats.kstest(x, "norm").statistic < 0.005
    assert np.abs(_NORMAL_TABLE).max() < 4.5


def test_bad_knobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="noise_scale"):
        make_sample(SMALL, 0, 0, noise_scale=1.5)
    with pytest.raises(ValueError, match="mixed_prob"):
        make_sample(SMALL, 0, 0, mixed_prob=-0.1)
    with pytest.raises(ValueError, match="seed"):
        make_sample(SMALL, -1, 0)
    with pytest.raises(ValueError, match="noise_types"):
        make_sample(SMALL, 0, 0, noise_types=("pink",))


# -- normalize ------------------------------------------------------------------------------------


def test_normalize_is_affine_invariant_across_dtypes() -> None:
    img = make_sample(SMALL, 0, 0, noise_types=("gaussian",), severity=0.1).image
    ref = normalize(img)
    lo, hi = img.min(), img.max()
    as_u8 = np.round((img - lo) / (hi - lo) * 255).astype(np.uint8)
    as_u16 = np.round((img - lo) / (hi - lo) * 65535).astype(np.uint16)
    assert np.abs(normalize(as_u16) - ref).max() < 1e-3
    assert np.abs(normalize(as_u8) - ref).max() < 0.05  # 8-bit quantization only
    assert np.allclose(normalize(img.astype(np.float64) * 3 + 7), ref, atol=1e-4)
    assert ref.dtype == np.float32 and ref.shape == img.shape
    assert abs(ref.mean()) < 1e-3


def test_normalize_edge_cases() -> None:
    assert not normalize(np.full((5, 7), 3, np.uint8)).any()  # constant -> zeros
    batch = normalize(np.stack([np.zeros((4, 4)), np.eye(4)]))
    assert batch.shape == (2, 4, 4) and not batch[0].any()
    assert normalize(np.eye(3, dtype=bool)).dtype == np.float32
    for bad, msg in (
        (np.zeros(5), "2-D"),
        (np.zeros((0, 3)), "empty"),
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.array([[np.inf, 1.0]]), "infinite"),
        (np.array([[np.inf, -np.inf]]), "infinite"),  # a mean of nan, not inf
        (np.array([[1e300, 0.0]]), "infinite"),  # finite in float64, inf once float32
        (np.stack([np.eye(3), np.full((3, 3), -np.inf)]), "infinite"),  # one bad image of a batch
        (np.zeros((2, 2), complex), "dtype"),
    ):
        with pytest.raises(ValueError, match=msg):
            normalize(bad)
