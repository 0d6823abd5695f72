"""Model cost: parameters, FLOPs and CPU latency of every registered variant, and CPU inference paths.

    python benchmarks/model.py                  # --quick (default): a few cells, minutes on 2 cores
    python benchmarks/model.py --full           # every cell; hours on 2 cores, so run it in parts:
    python benchmarks/model.py --full --tables variants --variants unet --bases 64 --precisions fp32

Three tables, all at batch 1 on the CPU:

1. every registered variant at base 16, 32 and 64 (depth 5): parameters and forward GFLOPs at 256
   and 512 px (always, counted on the meta device, so they cost nothing), and median latency at
   1 and 2 threads, fp32 and bf16 autocast (:func:`dotseg.device.autocast`) for the cells selected;
2. inference paths for one model (attention_unet base 16 at 512 px, with ``downscale`` 1 and 2):
   eager fp32 under ``no_grad`` is the baseline, measured in the same run, and every other path is
   given as a speed-up over it and as the largest difference of its probabilities from it;
3. the seed's deployed configuration (base-64 attention_unet, 256x256 input, eager fp32) as a
   reference row, forward alone and through :meth:`dotseg.inference.predictor.Predictor.predict`;
4. the shipped model (``dotseg/assets/model.safetensors``) on a 512x512 image against that seed
   configuration on a 256x256 image, whole ``Predictor.predict`` calls in the same rounds, with
   the speed-up and each model's Dice;
5. the CPU inference engines (:mod:`dotseg.inference.engines`) on the shipped model at 512x512,
   batch 1 and 8, each against eager in the same rounds, with max |Δprob| and mask agreement
   against eager on the evaluation set: how ``Predictor(engine="auto")`` is chosen. Tables 4 and
   5 use trained weights.

Weights are freshly initialised, and the BatchNorm statistics are then recomputed on two synthetic
samples: with the initial statistics (mean 0, variance 1) the activations shrink stage by stage and
every probability is ~0.45, which would make the "max abs diff" column say nothing, and tiny values
can turn into denormals, which are slow on x86 and would distort the latencies.

Every table times its cells round-robin, one thread count at a time (one untimed warm-up call
each, then one timed call per cell per round), so load from other processes on a shared machine
hits the cells that are compared with each other alike; medians are reported. A cell stops after
``--repeats`` calls, or once it has spent ``--max-cell-s`` seconds and has 3 calls; a cell whose
warm-up call alone took longer than that is not called again, and the warm-up is its one sample.
A median of fewer than 3 calls is marked ``*``.

Without native bf16 (AVX512-BF16 / AMX) oneDNN emulates it and bf16 runs ~100x slower than fp32
(minutes a call at base 64), so ``--quick`` then times fp32 only unless ``--precisions`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Hashable
from pathlib import Path

# libgomp's default wait policy spins at every barrier; when other processes share the 2 cores a
# descheduled thread stalls the spinning one, and 2-thread latency swung 0.33 s <-> 2.5 s between
# runs here (attention_unet base 16, 512 px). PASSIVE costs <10% on an idle machine and keeps the
# 2-thread columns meaningful; set OMP_WAIT_POLICY=ACTIVE to measure the default behaviour.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dotseg.checkpoint import ModelContract
from dotseg.device import amp_active, autocast, configure_cpu, native_bf16
from dotseg.evaluation import SEED_FIGURES
from dotseg.inference.predictor import Predictor
from dotseg.models import build_model, list_models
from dotseg.models.config import ModelConfig
from dotseg.normalize import normalize
from dotseg.synthesis import SynthesisConfig, make_sample

CPU = torch.device("cpu")
BASES = (16, 32, 64)
SIZES = (256, 512)
PRECISIONS = ("fp32", "bf16")
#: The --quick selection of (variant, base) pairs: the seed's architecture at two widths and the
#: plain U-Net, so one run shows both what width costs and what the attention modules cost.
QUICK_PAIRS = (("attention_unet", 16), ("attention_unet", 32), ("unet", 16))
#: The seed's deployed configuration: base-64 attention_unet, depth 5, run on 256x256 inputs.
SEED_MODEL = ModelConfig(variant="attention_unet", base_channels=64)
SEED_SIZE = 256


# --- models and inputs -------------------------------------------------------------------------


def synthetic_input(size: int, index: int = 0) -> torch.Tensor:
    """One normalised synthetic sample as the network sees it: (1, 1, size, size) float32."""
    cfg = SynthesisConfig().replace(size=size)
    image = normalize(make_sample(cfg, seed=0, index=index).image)  # (size, size) float32
    return torch.from_numpy(image)[None, None]


def calibrated_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model (seed 0) in eval mode whose BatchNorm statistics come from data."""
    torch.manual_seed(0)
    model = build_model(cfg)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration passes
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout2d):
            module.eval()
    with torch.no_grad():
        for index in range(2):
            model(synthetic_input(256, index))
    return model.eval()


def count(cfg: ModelConfig, size: int) -> tuple[int, int]:
    """(parameters, forward FLOPs at batch 1 and ``size`` px), on the meta device: nothing is computed.

    ``FlopCounterMode`` counts conv/matmul FLOPs as 2 per multiply-add (so GMACs = GFLOPs / 2) and
    ignores elementwise work (BatchNorm, ReLU, sigmoid, interpolation), a few percent here.
    """
    with torch.device("meta"):
        model = build_model(cfg).eval()
        x = torch.empty(1, 1, size, size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def fold_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with each ``Conv2d -> BatchNorm2d`` pair of a Sequential folded into one conv."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = nn.utils.fusion.fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    return model


# --- timing ------------------------------------------------------------------------------------


def interleaved(
    cells: dict[Hashable, Callable[[], object]], repeats: int, budget_s: float
) -> dict[Hashable, list[float]]:
    """Seconds per call of each cell, timed round-robin (see the module docstring for the stopping rule)."""
    times: dict[Hashable, list[float]] = {key: [] for key in cells}
    spent = dict.fromkeys(cells, 0.0)
    single = {}
    for key, fn in cells.items():  # warm-up: allocator, oneDNN primitive caches, OpenMP pool
        t0 = time.perf_counter()
        fn()
        single[key] = time.perf_counter() - t0
        if single[key] > budget_s:  # e.g. emulated bf16 at ~1 min a call: the warm-up is the sample
            times[key].append(single[key])
            spent[key] = single[key]

    def done(key: Hashable) -> bool:
        n = len(times[key])
        need = 1 if single[key] > budget_s else 3
        return n >= repeats or (spent[key] >= budget_s and n >= need)

    while not all(done(key) for key in cells):
        for key, fn in cells.items():
            if done(key):
                continue
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times[key].append(dt)
            spent[key] += dt
    return times


def ms(samples: list[float] | None) -> str:
    """Median in milliseconds, ``*`` if fewer than 3 calls, ``–`` if not measured."""
    if not samples:
        return "–"
    value = statistics.median(samples) * 1e3
    text = f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return text + ("*" if len(samples) < 3 else "")


def ratio(base: list[float] | None, other: list[float] | None) -> str:
    if not base or not other:
        return "–"
    return f"{statistics.median(base) / statistics.median(other):.2f}x"


def torch_call(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    threads: int,
    precision: str = "fp32",
    grad_mode: str = "no_grad",
) -> Callable[[], torch.Tensor]:
    """A closure running ``model(x)`` at ``threads`` intra-op threads under the given precision and grad mode."""
    mode = torch.inference_mode if grad_mode == "inference_mode" else torch.no_grad

    def call() -> torch.Tensor:
        torch.set_num_threads(threads)
        # force: the bf16 cells measure bf16 even where dotseg would fall back to fp32 (no native bf16).
        with mode(), autocast(CPU, enabled=precision == "bf16", force=True):
            return model(x)  # (1, 1, H, W) logits

    return call


# --- table 1: variants -------------------------------------------------------------------------


def variants_table(args: argparse.Namespace) -> None:
    print("## Variants: cost and CPU latency at batch 1 (depth 5)\n")
    print(
        "GFLOPs are forward conv FLOPs counted by `torch.utils.flop_counter.FlopCounterMode`: "
        "1 multiply-add = 2 FLOPs, so GMACs = GFLOPs / 2. Latency: median ms, "
        f"{args.repeats} calls at most ({args.max_cell_s:.0f} s budget per cell), "
        "`–` = not measured in this run.\n"
    )
    combos = [(size, prec, t) for size in args.sizes for prec in args.precisions for t in args.threads]
    header = " | ".join(f"{size} px {prec} {t}T ms" for size, prec, t in combos)
    print(f"| variant | base | params (M) | GFLOPs @256 | GFLOPs @512 | {header} |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(combos))
    for variant in list_models():
        for base in BASES:
            cfg = ModelConfig(variant=variant, base_channels=base)
            params, flops256 = count(cfg, 256)
            _, flops512 = count(cfg, 512)
            measured: dict[tuple[int, str, int], list[float]] = {}
            if (variant, base) in args.pairs:
                model = calibrated_model(cfg)
                for size in args.sizes:
                    if size == 512 and base == 64 and not args.full:
                        continue  # ~400 GFLOPs a call: --full only
                    x = synthetic_input(size)
                    for t in args.threads:
                        cells = {(size, prec, t): torch_call(model, x, t, prec) for prec in args.precisions}
                        measured.update(interleaved(cells, args.repeats, args.max_cell_s))
            cols = " | ".join(ms(measured.get(c)) for c in combos)
            print(
                f"| {variant} | {base} | {params / 1e6:.2f} | {flops256 / 1e9:.1f} | {flops512 / 1e9:.1f} | {cols} |",
                flush=True,
            )
    print()


# --- table 2: inference paths ------------------------------------------------------------------


def onnx_session_factory(model: nn.Module, x: torch.Tensor, workdir: Path) -> Callable[[int], Callable[[], np.ndarray]]:
    """Export ``model`` for the shape of ``x`` with the dynamo exporter; returns ``threads -> closure``.

    The legacy TorchScript exporter cannot export the blur-pool (a conv whose weight is expanded
    from a buffer at run time); the dynamo exporter (needs ``onnxscript``) can.
    """
    import onnxruntime as ort

    path = workdir / "model.onnx"
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["logits"], verbose=False
        )

    def make(threads: int) -> Callable[[], np.ndarray]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # ORT's workers busy-wait between ops by default; on 2 shared cores that spinning steals time
        # from whatever runs next (here: the other cells of the round), so it is switched off.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return lambda: session.run(None, feed)[0]  # (1, 1, H, W) float32 logits

    return make


def paths_table(args: argparse.Namespace) -> None:
    size = args.path_size
    print(f"## Inference paths: attention_unet base 16, {size} px, batch 1\n")
    print(
        "Baseline: eager fp32 under `torch.no_grad()`, measured in the same rounds. Speed-up = baseline "
        "median / path median at the same thread count. Diff = max |p - p_eager| of the sigmoid "
        "probabilities on one synthetic sample. Setup = one-off cost (trace, export, compile).\n"
    )
    print("| downscale | path | setup s | 1T ms | 2T ms | speed-up 1T | speed-up 2T | max abs diff |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for downscale in (1, 2):
        paths_rows(args, size, downscale)
    print()


def paths_rows(args: argparse.Namespace, size: int, downscale: int) -> None:
    """The paths table's rows for one ``downscale`` (a function, so that its closures bind one model)."""
    threads = args.threads
    model = calibrated_model(ModelConfig(variant="attention_unet", base_channels=16, downscale=downscale))
    x = synthetic_input(size)
    rows: list[tuple[str, float, dict[int, Callable[[], object]]]] = []
    skipped: list[tuple[str, str]] = []

    def add(name: str, setup: Callable[[], dict[int, Callable[[], object]]]) -> None:
        t0 = time.perf_counter()
        try:
            calls = setup()
        except Exception as exc:  # a path that does not work here is reported, not fatal
            skipped.append((name, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"))
            return
        rows.append((name, time.perf_counter() - t0, calls))

    add("eager fp32 (no_grad)", lambda: {t: torch_call(model, x, t) for t in threads})
    add(
        "inference_mode (the Predictor)",
        lambda: {t: torch_call(model, x, t, grad_mode="inference_mode") for t in threads},
    )
    if "bf16" in args.precisions:
        add("bf16 autocast", lambda: {t: torch_call(model, x, t, "bf16", "inference_mode") for t in threads})
    else:
        skipped.append(("bf16 autocast", "not run (--precisions bf16; emulated on this CPU)"))

    def channels_last() -> dict[int, Callable[[], object]]:
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        cl_x = x.contiguous(memory_format=torch.channels_last)
        return {t: torch_call(cl_model, cl_x, t, grad_mode="inference_mode") for t in threads}

    add("channels_last", channels_last)

    def folded() -> dict[int, Callable[[], object]]:
        f_model = fold_conv_bn(model)
        return {t: torch_call(f_model, x, t, grad_mode="inference_mode") for t in threads}

    add("conv+BN folded", folded)

    def traced(optimize: bool) -> dict[int, Callable[[], object]]:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TracerWarning about the padding branch: fixed shape here
            module = torch.jit.freeze(torch.jit.trace(model, x))
            if optimize:
                module = torch.jit.optimize_for_inference(module)
        return {t: torch_call(module, x, t) for t in threads}

    add("jit.trace + freeze", lambda: traced(False))
    add("jit.trace + freeze + optimize_for_inference", lambda: traced(True))

    if args.compile:

        def compiled() -> dict[int, Callable[[], object]]:
            # Inductor bakes the thread count into its C++ kernels and Dynamo guards on it, so
            # each thread count is a compilation of its own; both are done here, not in the rounds.
            c_model = torch.compile(model)
            calls = {t: torch_call(c_model, x, t, grad_mode="inference_mode") for t in threads}
            for call in calls.values():
                call()
            return calls

        add("torch.compile (inductor)", compiled)
    else:
        skipped.append(("torch.compile (inductor)", "not run (--compile; 2-5 min of compilation here)"))

    with tempfile.TemporaryDirectory() as tmp:

        def onnx() -> dict[int, Callable[[], object]]:
            make = onnx_session_factory(model, x, Path(tmp))
            return {t: make(t) for t in threads}

        add("ONNX Runtime (CPU EP)", onnx)

        with torch.no_grad():
            reference = torch.sigmoid(model(x)).numpy()
        diffs = {}
        for name, _, calls in rows:
            out = calls[threads[-1]]()
            logits = out.float().numpy() if isinstance(out, torch.Tensor) else out
            diffs[name] = float(np.abs(1 / (1 + np.exp(-logits.astype(np.float64))) - reference).max())
        times = {}
        for t in threads:
            cells = {(name, t): calls[t] for name, _, calls in rows}
            times.update(interleaved(cells, args.repeats, args.max_cell_s))

    base = rows[0][0]
    for name, setup_s, _ in rows:
        by_t = {t: times.get((name, t)) for t in (1, 2)}
        base_t = {t: times.get((base, t)) for t in (1, 2)}
        print(
            f"| {downscale} | {name} | {setup_s:.1f} | {ms(by_t[1])} | {ms(by_t[2])} "
            f"| {ratio(base_t[1], by_t[1])} | {ratio(base_t[2], by_t[2])} | {diffs[name]:.1e} |",
            flush=True,
        )
    for name, why in skipped:
        print(f"| {downscale} | {name} | | – | – | | | {why} |")


def predict_call(predictor: Predictor, image: np.ndarray, threads: int) -> Callable[[], object]:
    """A closure running the whole :meth:`Predictor.predict` (what a user's call costs) at ``threads``."""

    def call() -> object:
        torch.set_num_threads(threads)
        return predictor.predict(image)

    return call


# --- table 3: the seed's deployed configuration ------------------------------------------------


def reference_table(args: argparse.Namespace) -> None:
    print(
        f"## Reference: the seed's deployed configuration (attention_unet base 64, depth 5, "
        f"{SEED_SIZE}x{SEED_SIZE}, eager fp32)\n"
    )
    model = calibrated_model(SEED_MODEL)
    x = synthetic_input(SEED_SIZE)
    # The seed ran eager NCHW. threads=None leaves torch's setting to the cells below.
    predictor = Predictor(model, ModelContract(model=SEED_MODEL), channels_last=False, engine="eager")
    image = x[0, 0].numpy()
    whats = ("forward (no_grad)", "Predictor.predict (normalize + inference_mode + sigmoid)")
    times = {}
    for t in args.threads:
        cells = {(whats[0], t): torch_call(model, x, t), (whats[1], t): predict_call(predictor, image, t)}
        times.update(interleaved(cells, args.repeats, args.max_cell_s))
    params, flops = count(SEED_MODEL, SEED_SIZE)
    print(f"{params / 1e6:.2f} M parameters, {flops / 1e9:.1f} GFLOPs per forward.\n")
    print("| what | " + " | ".join(f"{t}T median ms | {t}T best ms" for t in args.threads) + " |")
    print("|---|" + "---:|---:|" * len(args.threads))
    for what in whats:
        cols = [f"{ms(times.get((what, t)))} | {min(times[(what, t)]) * 1e3:.0f}" for t in args.threads]
        print(f"| {what} | " + " | ".join(cols) + " |")
    print()


# --- table 4: the shipped model against the seed's deployed configuration ----------------------

SHIPPED_REPORT = Path(__file__).resolve().parents[1] / "docs" / "shipped-model" / "report.json"


def shipped_table(args: argparse.Namespace) -> None:
    """The shipped model predicting a 512x512 image against the seed's deployed configuration
    predicting a 256x256 one, timed in the same rounds; Dice from the committed evaluation report."""
    import json

    from dotseg.checkpoint import CheckpointError

    print("## The shipped model against the seed's deployed configuration\n")
    try:  # two copies: channels_last converts the model in place; eager both (table 5 compares engines)
        shipped = Predictor.from_checkpoint(None, channels_last=False, engine="eager")
        fast = Predictor.from_checkpoint(None, channels_last=True, engine="eager")  # the eager CPU default
    except CheckpointError as e:
        print(f"skipped: {e}\n")
        return
    seed = Predictor(
        calibrated_model(SEED_MODEL), ModelContract(model=SEED_MODEL), channels_last=False, engine="eager"
    )  # as it ran
    big = make_sample(shipped.synthesis, seed=0, index=0).image  # the raw image a user would send
    small = make_sample(SynthesisConfig().replace(size=SEED_SIZE), seed=0, index=0).image
    rows = {
        "seed: attention_unet base 64, 256 px input": (seed, small),
        f"shipped: {shipped.contract.model.variant} base {shipped.contract.model.base_channels}, "
        f"downscale {shipped.contract.model.downscale}, 512 px input, contiguous": (shipped, big),
        "shipped, channels_last (the Predictor's CPU default)": (fast, big),
    }
    times = {}
    for t in args.threads:
        times.update(
            interleaved(
                {(name, t): predict_call(p, im, t) for name, (p, im) in rows.items()}, args.repeats, args.max_cell_s
            )
        )
    dice = "–"
    if SHIPPED_REPORT.exists():
        dice = f"{json.loads(SHIPPED_REPORT.read_text())['overall']['model']['dice']:.3f}"
    params = {name: sum(q.numel() for q in p.model.parameters()) for name, (p, _) in rows.items()}
    print(
        "Whole `Predictor.predict` calls (normalize, forward, sigmoid, threshold) on one raw image. "
        "Speed-up = the seed row's median / the row's median, measured in the same rounds. Dice: the seed's "
        "reported val Dice (its own validation mix); the shipped model's overall Dice on the committed "
        "1000-image benchmark (docs/shipped-model/report.md).\n"
    )
    print("| model | params (M) | Dice | " + " | ".join(f"{t}T ms | speed-up {t}T" for t in args.threads) + " |")
    print("|---|---:|---:|" + "---:|---:|" * len(args.threads))
    seed_name = next(iter(rows))
    for name in rows:
        cols = [f"{ms(times[(name, t)])} | {ratio(times[(seed_name, t)], times[(name, t)])}" for t in args.threads]
        shown = f"{SEED_FIGURES['val_dice']} (reported)" if name == seed_name else dice
        print(f"| {name} | {params[name] / 1e6:.2f} | {shown} | " + " | ".join(cols) + " |")
    print()


# --- table 5: CPU inference engines ------------------------------------------------------------


def engine_call(predictor: Predictor, batch: np.ndarray, threads: int) -> Callable[[], object]:
    """A closure running the predictor's forward pass (engine + sigmoid) on a normalized batch."""

    def call() -> object:
        torch.set_num_threads(threads)  # eager's threads; an exported engine has its own, fixed at build
        return predictor._forward(batch)

    return call


def engines_table(args: argparse.Namespace) -> None:
    """Every installed engine against eager on the shipped model: speed at 512 px, batch 1 and 8, and
    agreement on ``--engine-n`` evaluation images. The exported model goes to a temporary cache, so
    the export is timed too."""
    from dotseg.checkpoint import CheckpointError
    from dotseg.evaluation import EVAL_SEED, benchmark_cases
    from dotseg.inference import engines

    print("## CPU inference engines: the shipped model at 512x512\n")
    names = [n for n in engines.ENGINES if n == "eager" or engines._missing(engines.ENGINES[n]) is None]
    missing = [n for n in engines.ENGINES if n not in names]
    with tempfile.TemporaryDirectory() as tmp:
        old_cache = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = tmp
        try:
            built: dict[tuple[str, int], Predictor] = {}
            setup: dict[str, tuple[float, float]] = {}
            for name in names:
                for t in args.threads:
                    t0 = time.perf_counter()
                    try:
                        built[(name, t)] = Predictor.from_checkpoint(None, threads=t, engine=name)
                    except CheckpointError as e:
                        print(f"skipped: {e}\n")
                        return
                    first = time.perf_counter() - t0
                    if t == args.threads[0]:  # first build: exports; the next one loads the cache
                        setup[name] = (first, first)
                    else:
                        setup[name] = (setup[name][0], first)
        finally:
            if old_cache is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = old_cache
    eager = built[("eager", args.threads[0])]

    # Agreement: the evaluation set's recipes, at the model's size, every engine at batch 8.
    cases = benchmark_cases(args.engine_n)
    images = [c.sample(eager.synthesis).image for c in cases]
    torch.set_num_threads(args.threads[0])
    reference = eager.predict_batch(images)
    agreement = {}
    for name in names:
        preds = built[(name, args.threads[0])].predict_batch(images)
        diff = max(float(np.abs(p.prob - r.prob).max()) for p, r in zip(preds, reference, strict=True))
        same = sum(int((p.mask == r.mask).sum()) for p, r in zip(preds, reference, strict=True))
        identical = sum(bool(np.array_equal(p.mask, r.mask)) for p, r in zip(preds, reference, strict=True))
        agreement[name] = (diff, same / sum(r.mask.size for r in reference), identical)

    # Speed: forward + sigmoid on normalized 512x512 batches, engines against eager in the same rounds.
    normalized = np.stack([normalize(im) for im in images[:8]])  # (8, 512, 512)
    # The first 3 calls at a shape never seen before: OpenVINO runs a new shape on its dynamic-shape
    # model and compiles one for the shape on its 3rd occurrence (engines.OPENVINO_PROMOTE_AT).
    new_shape: dict[str, list[float]] = {}
    for name in names:
        call = engine_call(built[(name, args.threads[0])], normalized[:3, :448, :320].copy(), args.threads[0])
        new_shape[name] = []
        for _ in range(3):
            t0 = time.perf_counter()
            call()
            new_shape[name].append(time.perf_counter() - t0)
    times: dict[tuple[str, int, int], list[float]] = {}
    for t in args.threads:
        for batch in (1, 8):
            cells = {(name, t, batch): engine_call(built[(name, t)], normalized[:batch], t) for name in names}
            for call in cells.values():  # steady state: OpenVINO has compiled for the shape by the 3rd call
                for _ in range(2):
                    call()
            rounds = args.engine_rounds if batch == 1 else max(3, args.engine_rounds // 3)
            times.update(interleaved(cells, rounds, args.max_cell_s))

    cols = [(t, b) for t in args.threads for b in (1, 8)]
    print(
        f"Forward pass + sigmoid on normalized 512x512 input (normalize and the threshold are the same "
        f"for every engine), median ms per call of up to {args.engine_rounds} rounds at batch 1 and "
        f"{max(3, args.engine_rounds // 3)} at batch 8, speed-up = eager's median / the engine's at the "
        f"same threads and batch, measured in the same rounds. Agreement against eager on "
        f"{len(images)} evaluation images (`benchmark_cases`, seed {EVAL_SEED}, batch 8, "
        f"{args.threads[0]} thread): max |Δprob| over all pixels, identical mask pixels, images whose "
        f"masks are identical. Setup: first construction (export included; the engines share one "
        f"exported file) / a later one (cached). New shape: the 1st / 3rd call on a 3x448x320 batch "
        f"never seen before (OpenVINO compiles a model for a shape on its 3rd call; until then it runs "
        f"its dynamic-shape model).\n"
    )
    head = " | ".join(f"{t}T b{b} ms | ×eager" for t, b in cols)
    print(f"| engine | setup s | new shape ms | {head} | max abs Δprob | mask pixels equal | identical masks |")
    print("|---|---:|---:|" + "---:|---:|" * len(cols) + "---:|---:|---:|")
    for name in names:
        cells = " | ".join(
            f"{ms(times[(name, t, b)])} | {ratio(times[('eager', t, b)], times[(name, t, b)])}" for t, b in cols
        )
        diff, pixels, identical = agreement[name]
        first, later = setup[name]
        print(
            f"| {name} | {first:.1f} / {later:.1f} | {new_shape[name][0] * 1e3:.0f} / "
            f"{new_shape[name][2] * 1e3:.0f} | {cells} | {diff:.1e} "
            f"| {pixels:.6%} | {identical}/{len(images)} |",
            flush=True,
        )
    for name in missing:
        print(f"| {name} | not installed ({engines.ENGINES[name].install}) |" + " |" * (2 * len(cols) + 4))

    def score(name: str) -> float:  # geometric mean of the speed-ups over the cells
        ratios = [statistics.median(times[("eager", t, b)]) / statistics.median(times[(name, t, b)]) for t, b in cols]
        return float(np.exp(np.mean(np.log(ratios))))

    ok = [n for n in names if agreement[n][0] <= engines.PROBE_TOLERANCE and agreement[n][2] == len(images)]
    ranking = ", ".join(f"{n} {score(n):.2f}x" for n in sorted(ok, key=score, reverse=True))
    refused = [n for n in names if n not in ok]
    print(
        f"\nWithin {engines.PROBE_TOLERANCE:g} of eager with identical masks, by the geometric mean of their "
        f"speed-ups: {ranking}" + (f"; refused: {', '.join(refused)}" if refused else "") + ". "
        f'`engine="auto"` tries, in order: {", ".join(engines.AUTO_ORDER)} (see dotseg/inference/engines.py).\n'
    )


# --- entry point -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="default: attention_unet base 16/32 and unet base 16 at 256 px, 3 calls per cell",
    )
    mode.add_argument(
        "--full",
        action="store_true",
        help="every variant and base at 256 and 512 px, 5 calls per cell, torch.compile included",
    )
    ap.add_argument(
        "--tables",
        nargs="+",
        choices=("variants", "paths", "reference", "shipped", "engines"),
        default=["variants", "paths", "reference", "shipped", "engines"],
        help="which tables to print (default all)",
    )
    ap.add_argument("--variants", nargs="+", choices=list_models(), help="variants to time (table 1)")
    ap.add_argument("--bases", nargs="+", type=int, choices=BASES, help="base widths to time (table 1)")
    ap.add_argument("--sizes", nargs="+", type=int, choices=SIZES, help="image sides to time (table 1)")
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        help="fp32 and/or bf16 autocast (tables 1 and 2; default both, but fp32 only for "
        "--quick on a CPU without native bf16)",
    )
    ap.add_argument(
        "--threads", nargs="+", type=int, choices=(1, 2), default=[1, 2], help="intra-op thread counts (default 1 2)"
    )
    ap.add_argument("--repeats", type=int, help="timed calls per cell at most (default 3 quick, 5 full)")
    ap.add_argument(
        "--max-cell-s",
        type=float,
        default=30.0,
        help="a cell stops after this many seconds once it has 3 calls (default 30)",
    )
    ap.add_argument("--path-size", type=int, choices=SIZES, default=512, help="image side for table 2 (default 512)")
    ap.add_argument(
        "--engine-n", type=int, default=64, help="evaluation images for the engines' agreement (default 64)"
    )
    ap.add_argument(
        "--engine-rounds",
        type=int,
        default=30,
        help="timed rounds of the engines table at batch 1; a third of them at batch 8 (default 30)",
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="include torch.compile in table 2 (default: only with --full)",
    )
    args = ap.parse_args()

    args.quick = not args.full
    if args.repeats is None:
        args.repeats = 5 if args.full else 3
    if args.compile is None:
        args.compile = args.full
    if args.precisions is None:
        args.precisions = list(PRECISIONS) if args.full or native_bf16() else ["fp32"]
    if args.sizes is None:
        args.sizes = list(SIZES) if args.full else [256]
    if args.full or args.variants or args.bases:
        args.pairs = {(v, b) for v in (args.variants or list_models()) for b in (args.bases or BASES)}
    else:
        args.pairs = set(QUICK_PAIRS)
    args.threads = sorted(args.threads)
    return args


def main() -> None:
    args = parse_args()
    configure_cpu()  # flush-to-zero for denormals, as training and the Predictor run
    amp_active(CPU, True)  # prints dotseg's one-time "no native bf16" note here, not inside a table
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"# model benchmark ({'full' if args.full else 'quick'}): torch {torch.__version__}, "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native_bf16() else 'no (emulated)'}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, {os.cpu_count()} CPUs, load average {load}, "
        f"batch 1, median of up to {args.repeats} calls\n"
    )
    if "variants" in args.tables:
        variants_table(args)
    if "paths" in args.tables:
        paths_table(args)
    if "reference" in args.tables:
        reference_table(args)
    if "shipped" in args.tables:
        shipped_table(args)
    if "engines" in args.tables:
        engines_table(args)
    print("load average at the end: " + " ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
