"""The ``dotseg`` command: parse, build, run. Logic lives in the modules it calls.

Imports are deferred into each command so ``dotseg --help`` and config errors answer at once,
without loading torch or Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

EPILOG = """examples:
  dotseg synth --n 16 --out runs/synth --grid runs/synth/grid.png
  dotseg synth --ray --n 256 --out runs/synth          # parallel Ray Data workers
  dotseg config --config configs/cpu.yaml --set train.lr=3e-4
  dotseg config --explain                                # every key, its type, default and meaning
  dotseg config --schema dotseg.schema.json              # JSON Schema for editors
  dotseg train --config configs/quickstart.yaml          # embedded local Ray
  dotseg train --config configs/smoke.yaml --workers 2 # CPU DDP
  dotseg train --resume runs/<run>                      # continue from the last checkpoint
  dotseg sweep --config configs/sweep-smoke.yaml       # Ray Tune: ASHA, one W&B run per trial
  dotseg sweep --promote runs/<sweep> --out best.safetensors
  dotseg curriculum --config configs/cpu.yaml           # epoch -> phase, noise, loss weights
  dotseg predict --checkpoint best.safetensors --input scans/ --output masks/ --overlay
  dotseg evaluate --checkpoint best.safetensors --n 1000 --out runs/eval
  dotseg serve --port 8000                               # HTTP API, docs and dashboard on Ray Serve
"""


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``dotseg synth: error: argument --n: ...``), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _ranged(kind: type, lo: float | None = None, hi: float | None = None, *, open_interval: bool = False):
    """An argparse ``type`` that parses ``kind`` and checks ``lo <= value <= hi`` (strict with
    ``open_interval``), so a bad flag is a usage error naming the flag, before anything loads."""

    def parse(text: str) -> Any:
        value = kind(text)
        low_ok = lo is None or (value > lo if open_interval else value >= lo)
        high_ok = hi is None or (value < hi if open_interval else value <= hi)
        if not (low_ok and high_ok):
            if hi is None:
                allowed = f"{'>' if open_interval else '>='} {lo:g}"
            else:
                brackets = "()" if open_interval else "[]"
                allowed = f"in {brackets[0]}{'-inf' if lo is None else f'{lo:g}'}, {hi:g}{brackets[1]}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def _actors(text: str) -> tuple[int, int]:
    """``--actors N`` (a fixed pool) or ``MIN-MAX`` (autoscaling), 1 <= MIN <= MAX."""
    low, _, high = text.partition("-")
    try:
        pair = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N or MIN-MAX (whole numbers), got {text}") from None
    if not 1 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"must be N >= 1 or MIN-MAX with 1 <= MIN <= MAX, got {text}")
    return pair


@contextlib.contextmanager
def _ray_logs(args: argparse.Namespace) -> Iterator[None]:
    """Ray's own driver log lines go to a file under the cache dir, not between the progress lines."""
    from datetime import datetime

    from dotseg.runtime import ray_logs_to
    from dotseg.storage import CACHE_DIR

    path = CACHE_DIR / "logs" / f"{args.command}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with ray_logs_to(path):
        yield


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        metavar="YAML",
        default=None,
        help="config file, or the name of a shipped one (default, cpu, smoke, quickstart); "
        "omitted = built-in defaults (= configs/default.yaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config value by its full key path, e.g. --set train.lr=3e-4 "
        "(repeatable; see `dotseg config --explain` for every key)",
    )


def _load(args: argparse.Namespace):
    from dotseg.config import load_config

    return load_config(args.config, args.overrides)


# -- dotseg config ------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    from dotseg.config import Config, dump_yaml
    from dotseg.configbase import explain

    if args.explain:
        for key, tp, default, doc in explain(Config):
            print(f"{key}  ({tp}, default {default!r})\n    {doc}")
        return 0
    if args.schema is not None:
        import json

        text = json.dumps(Config.model_json_schema(), indent=1) + "\n"
        if args.schema == "-":
            print(text, end="")
        else:
            Path(args.schema).write_text(text)
            print(
                f"JSON Schema of the config written to {args.schema} (point your editor's YAML "
                f"language server at it, e.g. `# yaml-language-server: $schema={args.schema}`)"
            )
        return 0
    cfg = _load(args)
    print(f"# config hash: {cfg.hash}, run identity: {cfg.run_id}")
    print(dump_yaml(cfg), end="")
    return 0


# -- dotseg curriculum ---------------------------------------------------------------------------


def cmd_curriculum(args: argparse.Namespace) -> int:
    from dotseg.curriculum import schedule_table

    cfg = _load(args)
    rows = schedule_table(cfg.curriculum, cfg.loss, cfg.train.epochs)
    print(f"# curriculum and loss schedule, {cfg.train.epochs} epochs (config hash {cfg.hash})")
    print(
        f"{'epoch':>5}  {'phase':<10} {'noise_scale':>11} {'mixed_prob':>10}  "
        f"{'w_dice':>6} {'w_bce':>6} {'w_boundary':>10}"
    )
    for r in rows:
        print(
            f"{r['epoch']:>5}  {r['phase']:<10} {r['noise_scale']:>11.2f} {r['mixed_prob']:>10.2f}  "
            f"{r['dice']:>6.3f} {r['bce']:>6.3f} {r['boundary']:>10.3f}"
        )
    return 0


# -- dotseg synth -------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> int:
    from dotseg.synthesis.export import noise_grid, write_samples

    cfg = _load(args)
    if args.size:
        cfg = cfg.replace(**{"synthesis.size": args.size})
    seed = cfg.train.seed if args.seed is None else args.seed
    if args.n > 0:
        if args.out is None:
            raise UserError("--out DIR is required to write samples (or pass --n 0 with --grid)")
        t0 = time.perf_counter()
        written = write_samples(
            _synth_batches(cfg, seed, args),
            Path(args.out),
            args.n,
            preview=not args.no_preview,
            progress=not args.quiet,
            labelled=args.labelled,
        )
        dt = time.perf_counter() - t0
        print(
            f"wrote {written} samples ({cfg.synthesis.size}x{cfg.synthesis.size}, seed {seed}) to {args.out}/ "
            f"in {dt:.1f} s ({written / dt:.1f} samples/s incl. writing)"
        )
    if args.grid:
        path = noise_grid(cfg.synthesis, seed, args.grid)
        print(f"sample grid (noise types x severity): {path}")
    return 0


def _synth_batches(cfg: Any, seed: int, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Batches of samples, from Ray Data workers (``--ray``) or this process."""
    from dotseg.synthesis import make_batch

    knobs = {"noise_scale": args.noise_scale, "mixed_prob": args.mixed_prob, "noisy": not args.clean}
    if not args.ray:
        step = 16
        for start in range(args.start, args.start + args.n, step):
            stop = min(start + step, args.start + args.n)
            yield make_batch(cfg.synthesis, seed, range(start, stop), **knobs)
        return
    from dotseg.data import synthesis_dataset
    from dotseg.runtime import init_ray

    resources = init_ray(args.address, num_cpus=args.num_cpus)
    print(
        f"Ray: {int(resources.get('CPU', 0))} CPUs, synthesizing with "
        f"{cfg.data.synth_tasks} Ray Data tasks x {cfg.data.rows_per_block} rows per block",
        flush=True,
    )
    ds = synthesis_dataset(cfg.synthesis, cfg.data, seed, args.n, offset=args.start, **knobs)
    yield from ds.iter_batches(batch_size=cfg.data.rows_per_block, batch_format="numpy", prefetch_batches=2)


# -- dotseg data --------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    import json

    from dotseg.labelled import DatasetError, summary, summary_lines

    synthesis = None
    if args.checkpoint:
        from dotseg.checkpoint import CheckpointError, read_meta, trained_synthesis
        from dotseg.inference.predictor import resolve_checkpoint

        try:
            synthesis = trained_synthesis(read_meta(resolve_checkpoint(args.checkpoint)))
        except CheckpointError as e:
            raise UserError(str(e)) from None
    try:
        s = summary(args.location, synthesis)
    except DatasetError as e:
        raise UserError(str(e)) from None
    print(json.dumps(s, indent=1) if args.json else "\n".join(summary_lines(s)))
    return 0


# -- dotseg predict -----------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from dotseg.batch import remote, use_ray
    from dotseg.checkpoint import CheckpointError
    from dotseg.inference.images import ImageError, list_images
    from dotseg.storage import StorageError

    try:
        if use_ray(args.runner, args.input, args.output, args.address):  # a bucket, a cluster, or --runner ray
            return _predict_at_scale(args)
        if remote(args.input, args.output, args.address):
            raise UserError("--runner local reads and writes local files only: drop --address and bucket URIs")
        inputs = list_images(args.input)
        if use_ray(args.runner, args.input, args.output, args.address, len(inputs)):
            return _predict_at_scale(args)
        return _predict_here(args, inputs)
    except (ImageError, CheckpointError, StorageError) as e:
        raise UserError(str(e)) from None
    except ValueError as e:  # a threshold or thread count out of range, or a device that is not here
        raise UserError(str(e)) from None


def _predict_here(args: argparse.Namespace, inputs: list[Path]) -> int:
    """Today's single-process path: small local inputs, no Ray."""
    from dotseg.inference.files import predict_files
    from dotseg.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        device=args.device,
        threads=args.threads,
        threshold=args.threshold,
        engine=args.engine,
        precision=args.precision,
    )
    result = predict_files(
        predictor, inputs, Path(args.output), prob=args.prob, overlay=args.overlay, progress=not args.quiet
    )
    failed = f" ({len(result.failed)} failed)" if result.failed else ""
    source = predictor.checkpoint.path if predictor.checkpoint else "the shipped model"
    print(
        f"predicted {result.written} of {len(inputs)} images{failed} into {args.output}/ in {result.seconds:.1f} s "
        f"with {source} (threshold {predictor.threshold:g}, {predictor.device}, "
        f"{predictor.engine} {predictor.precision})"
    )
    return 1 if result.failed else 0


def _predict_at_scale(args: argparse.Namespace) -> int:
    """Ray Data: an actor pool of Predictors, a manifest, resumable (dotseg.batch)."""
    from dotseg.batch import BatchError, BatchOptions, default_threads, predict_at_scale
    from dotseg.device import resolve_device

    device = resolve_device(args.device).type  # fails fast here for a device this machine lacks
    if args.address and args.device == "auto":
        device = "cpu"  # the driver's GPU says nothing of the cluster's: ask with --device cuda
    options = BatchOptions(
        checkpoint=args.checkpoint,
        threshold=args.threshold,
        device=device,
        threads=args.threads or default_threads(),
        engine=args.engine,
        precision=args.precision,
        prob=args.prob,
        overlay=args.overlay,
        describe=not args.no_describe,
    )
    try:
        with _ray_logs(args):
            result = predict_at_scale(
                args.input,
                args.output,
                options,
                address=args.address,
                actors=args.actors,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
    except BatchError as e:
        raise UserError(str(e)) from None
    failed = f", {len(result.failed)} failed" if result.failed else ""
    skipped = f", {result.skipped} done earlier and skipped" if result.skipped else ""
    rate = f" ({result.done / result.seconds:.2f} images/s" if result.seconds > 0 and result.done else ""
    if rate:
        steady = result.steady_rate
        rate += f"; {steady:.2f} images/s after {result.startup_s:.1f} s of start-up)" if steady else ")"
    where = f" on {result.nodes} Ray node(s)" if result.nodes else ""
    print(
        f"predicted {result.done} of {result.total} images{skipped}{failed} into {args.output} "
        f"in {result.seconds:.1f} s{rate}{where}; manifest: {result.manifest or '(nothing to do)'}"
    )
    return 1 if result.failed else 0


# -- dotseg evaluate ----------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from datetime import datetime

    from dotseg import tracking
    from dotseg.checkpoint import CheckpointError
    from dotseg.evaluation import EVAL_SEED, SUITE_N, evaluate, summary_lines

    cfg = _load(args)  # the baseline's settings and W&B's
    out = Path(args.out or f"runs/eval-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if args.gate:
        return _gate(args, out)
    if args.data:
        return _evaluate_data(args, cfg, out)
    # The benchmark is the seed's generator unless the user names another with --config / --set.
    own_generator = args.config is not None or any(o.startswith("synthesis.") for o in args.overrides)
    try:
        report = evaluate(
            None if args.baseline else args.checkpoint,
            SUITE_N[args.suite] if args.n is None else args.n,
            out,
            suite=args.suite,
            baseline=cfg.baseline,
            baseline_only=args.baseline,
            size=args.size,
            seed=EVAL_SEED if args.seed is None else args.seed,
            tolerance=args.tolerance,
            threads=args.threads,
            progress=not args.quiet,
            synthesis=cfg.synthesis if own_generator else None,
        )
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if args.suite == "shift":
        from dotseg.shift import summary_lines as shift_lines

        print("\n".join(shift_lines(report)))
        print(f"report: {out / 'report.md'} (and report.json, shift_drop.png, gallery.png)")
    else:
        print("\n".join(summary_lines(report)))
        print(f"report: {out / 'report.md'} (and report.json, dice_vs_snr.png, worst_*.png)")
    if args.wandb:
        tracking.log_evaluation(report, out, cfg.train.wandb)
    return 0


def _evaluate_data(args: argparse.Namespace, cfg: Any, out: Path) -> int:
    from dotseg.checkpoint import CheckpointError
    from dotseg.evaluation import evaluate_labelled
    from dotseg.labelled import DatasetError

    if args.baseline or args.suite != "standard" or args.gate:
        raise UserError(
            "--data evaluates the model and the baseline on your images: drop --baseline / --suite / --gate"
        )
    try:
        report = evaluate_labelled(
            args.checkpoint,
            args.data,
            out,
            baseline=cfg.baseline,
            tolerance=args.tolerance,
            threads=args.threads,
            progress=not args.quiet,
        )
    except (CheckpointError, DatasetError) as e:
        raise UserError(str(e)) from None
    for name, o in report["overall"].items():
        print(f"{name:<9} n={o['n']}  dice {o['dice']:.3f}  iou {o['iou']:.3f}  boundary F1 {o['boundary_f1']:.3f}")
    ind = report["in_distribution"]
    print(
        f"in distribution: {ind['pass']} of {report['benchmark']['n']}"
        + (f" (flagged: {', '.join(ind['flagged'][:5])})" if ind["flagged"] else "")
    )
    print(f"report: {out / 'report.md'} (and report.json, worst_*.png)")
    return 0


def _gate(args: argparse.Namespace, out: Path) -> int:
    from dotseg.checkpoint import CheckpointError
    from dotseg.inference.precision import GATE_N, gate_lines, run_gate

    if args.baseline or args.suite != "standard":
        raise UserError("--gate runs on the standard benchmark with a model: drop --baseline / --suite")
    try:
        result = run_gate(
            args.checkpoint, n=args.n or GATE_N, threads=args.threads or 1, out_dir=out, progress=not args.quiet
        )
    except CheckpointError as e:
        raise UserError(str(e)) from None
    print("\n".join(gate_lines(result)))
    passed = [f"{r['engine']} {r['precision']}" for r in result["rows"] if r["precision"] != "fp32" and r["passed"]]
    if "record" in result:
        print(f"recorded: {result['record']} (passed: {', '.join(passed) or 'none'}; precision auto uses the fastest)")
    else:
        print(f"not recorded: --n {result['n']} is a preview; the gate records at --n {GATE_N} or more")
    print(f"report: {out / 'gate.md'} (and gate.json)")
    return 0


# -- dotseg train -------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from dotseg.training.run import TrainError, resume_config, train

    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"train.num_workers={args.workers}")
    if args.gpu:
        overrides.append("train.use_gpu=true")
    if args.init is not None:
        if args.resume:
            raise UserError("--init starts a new run from a checkpoint's weights; --resume continues a run: use one")
        overrides.append(f"train.init={args.init}")
    args.overrides = overrides  # _load reads them from args
    try:
        if args.resume:
            cfg = resume_config(args.resume, args.config, overrides)
            result = train(
                cfg,
                resume=args.resume,
                address=args.address,
                quiet=args.quiet,
                verbose=args.verbose,
                stop_after_epoch=args.stop_after_epoch,
            )
        else:
            cfg = _load(args)
            from dotseg.training.run import new_run_dir

            result = train(
                cfg,
                run_dir=new_run_dir(cfg, args.name),
                address=args.address,
                quiet=args.quiet,
                verbose=args.verbose,
                stop_after_epoch=args.stop_after_epoch,
            )
    except TrainError as e:
        raise UserError(str(e)) from None
    m = result.best_metrics
    print(
        f"[dotseg] finished ({result.stop_reason.replace('_', ' ')}) after {len(result.history)} epoch(s) "
        f"in {result.wall_s / 60:.1f} min"
    )
    if result.best_checkpoint:
        best = result.where("best.safetensors")
        print(
            f"[dotseg] best checkpoint: {best}  (epoch {m.get('epoch')}, "
            f"val dice {m.get('val_dice', float('nan')):.4f}, clean dice {m.get('clean_dice', float('nan')):.4f}, "
            f"val iou {m.get('val_iou', float('nan')):.4f}"
            + (f", held-out labelled dice {m['labelled_dice']:.4f}" if "labelled_dice" in m else "")
            + ")"
        )
        print(
            f"[dotseg] learning curves: {result.where('curves.png')}; history: {result.where('history.json')}; "
            f"W&B (offline): wandb sync {result.run_dir / 'wandb'}"
            + (f" (also uploaded to {result.where('wandb')})" if result.remote else "")
        )
        print(f"[dotseg] next: dotseg predict --checkpoint {best} --input IMAGES --output OUT")
    return 0


# -- dotseg sweep -------------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    from dotseg.tuning.sweep import SweepError, sweep, sweep_config

    try:
        if args.promote:
            from dotseg.checkpoint import CheckpointError
            from dotseg.tuning.results import promote

            if not args.out:
                raise UserError("--promote needs --out PATH.safetensors (where to write the checkpoint)")
            try:
                p = promote(Path(args.promote).expanduser().resolve(), Path(args.out))
            except CheckpointError as e:
                raise UserError(str(e)) from None
            params = ", ".join(f"{k}={v}" for k, v in p["params"].items())
            metric = p["metric"]
            print(
                f"[dotseg] promoted {p['trial']} ({params}), epoch {p['epoch']}, {metric.replace('_', ' ')} "
                f"{p.get(metric, float('nan')):.4f} -> {p['out']}  (model id {p['model_id']})"
            )
            print(f"[dotseg] next: dotseg serve --checkpoint {p['out']}   or   dotseg evaluate --checkpoint {p['out']}")
            return 0
        if args.report:
            from dotseg.tuning.results import table_lines, write

            sweep_dir = Path(args.report).expanduser().resolve()
            cfg = sweep_config(sweep_dir)
            rows = write(sweep_dir, cfg)
            print("\n".join(table_lines(rows, [d.key for d in cfg.tune.space], cfg.tune.metric)))
            return 0
        if args.resume:
            if args.config or args.overrides:
                raise UserError("--resume continues a sweep with the config it started with; drop --config/--set")
            result = sweep(resume=Path(args.resume), address=args.address, quiet=args.quiet, verbose=args.verbose)
        else:
            result = sweep(_load(args), address=args.address, quiet=args.quiet, verbose=args.verbose)
    except SweepError as e:
        raise UserError(str(e)) from None
    from dotseg.tuning.results import table_lines

    cfg = sweep_config(result.sweep_dir)
    d = result.sweep_dir
    print("\n".join(table_lines(result.rows, [dim.key for dim in cfg.tune.space], cfg.tune.metric)))
    print(f"[dotseg] sweep finished in {result.wall_s / 60:.1f} min: {d / 'results.md'}, {d / 'results.csv'}")
    print(f"[dotseg] pictures: {d / 'parallel.png'}, {d / 'curves.png'}")
    print(f"[dotseg] W&B (offline, one run per trial in group {d.name}): wandb sync {d / 'wandb'}")
    unfinished = [r["trial"] for r in result.rows if r["status"] in ("running", "interrupted", "pending")]
    errored = [r for r in result.rows if r["status"] == "errored"]
    if unfinished:
        print(f"[dotseg] {len(unfinished)} trial(s) unfinished; continue with: dotseg sweep --resume {d}")
        return 130
    if errored:
        where = ", ".join(str(d / r["dir"] / "error.txt") for r in errored)
        print(f"[dotseg] {len(errored)} trial(s) errored: see {where}")
    print(f"[dotseg] next: dotseg sweep --promote {d} --out best.safetensors")
    return 1 if errored else 0


# -- dotseg submit / dotseg jobs ---------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from dotseg import submit as jobs

    extra = list(getattr(args, "passthrough", []))
    try:
        _, status = jobs.submit(args.address, args.job, args.config, args.overrides, extra, wait=not args.no_wait)
    except jobs.SubmitError as e:
        raise UserError(str(e)) from None
    return jobs.exit_status(status)


def cmd_jobs(args: argparse.Namespace) -> int:
    from dotseg import submit as jobs

    try:
        if args.action == "list":
            rows = jobs.list_jobs(args.address)
            for r in rows:
                print(f"{r['id']:<44} {r['status']:<10} {r['start']}  {r['entrypoint']}")
            if not rows:
                print("no jobs")
            return 0
        if not args.id:
            raise UserError(f"dotseg jobs {args.action} needs a submission id (see: dotseg jobs list)")
        if args.action == "status":
            return jobs.exit_status(jobs.finish_line(args.address, args.id))
        if args.action == "logs":
            if args.follow:
                jobs.follow(args.address, args.id)
                return jobs.exit_status(jobs.finish_line(args.address, args.id))
            print(jobs.logs(args.address, args.id), end="")
            return 0
        stopped = jobs.stop_job(args.address, args.id)
        print(f"[dotseg] {args.id}: {'stop requested' if stopped else 'not running (nothing to stop)'}")
        return 0
    except jobs.SubmitError as e:
        raise UserError(str(e)) from None


# -- dotseg serve -------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from dotseg.checkpoint import CheckpointError
    from dotseg.serving import run

    overrides = list(args.overrides)
    # On a running app, no checkpoint given keeps its model (a rollout of new replica counts only);
    # `--checkpoint shipped` names the shipped model explicitly.
    keep_model = args.checkpoint is None and not any(o.startswith("serve.checkpoint=") for o in overrides)
    checkpoint = "null" if args.checkpoint == "shipped" else args.checkpoint
    for flag, key in ((checkpoint, "checkpoint"), (args.host, "host"), (args.port, "port")):
        if flag is not None:
            overrides.append(f"serve.{key}={flag}")
    cfg = _load(argparse.Namespace(config=args.config, overrides=overrides)).serve
    if args.detach and not args.address:
        raise UserError(
            "--detach leaves the app running on a cluster: it needs --address (an embedded Ray ends with us)"
        )
    rolled = False
    try:
        if args.detach:  # a job on a cluster: start the app, or roll the checkpoint out to the running one
            urls, rolled = run.start_or_roll_out(cfg, args.address, not args.verbose, keep_model)
        else:
            urls = run.start(cfg, address=args.address, quiet=not args.verbose)
        model = run.wait_ready(urls["api"])["model"]
    except (CheckpointError, run.ServeError) as e:
        if not args.detach:  # a detached job leaves the cluster's app as it was
            run.stop()
        raise UserError(str(e)) from None
    print(
        f"dotseg serve: {model.get('checkpoint')} (model {model.get('model_id')}, {model.get('variant')}, "
        f"engine {model.get('engine')} {model.get('precision')}), {cfg.min_replicas}-{cfg.max_replicas} replica(s)"
    )
    print(f"  API        {urls['api']}  (POST /predict, /predict/json; GET /demo, /health, /ready)")
    print(f"  docs       {urls['docs']}")
    print(f"  dashboard  {urls['dashboard']}")
    if cfg.ingress == "haproxy" and args.address is None:
        for line in run.haproxy_listeners():
            print(f"  also open  {line}")
    if args.detach:
        what = (
            ("updated the running app, same model" if keep_model else "rolled out to the running app")
            if rolled
            else "started"
        )
        print(f"detached ({what}): the app keeps running on the cluster (stop it with `serve shutdown`)", flush=True)
        return 0
    print("Ctrl-C stops it.", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    # Ctrl-C must stop it even when we were started with SIGINT ignored (a parent that ignores it,
    # nohup-like launchers, a test runner): Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while not done.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("dotseg serve: stopping", flush=True)
        run.stop()
    return 0


# -- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from dotseg.submit import COMMANDS as JOBS  # stdlib only at import

    parser = _Parser(
        prog="dotseg",
        description="Noise-robust dot-pattern segmentation: synthesis, training, sweeps and serving on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "synth",
        help="write synthetic samples (npz + PNG previews) and/or a sample grid",
        description="Synthesize noisy dot-blob samples, deterministically from a seed. "
        "Each sample is written as sample_<index>.npz (image float32, mask uint8, "
        "dots, meta JSON) plus a PNG preview with the mask outline.",
    )
    _add_config_args(p)
    p.add_argument("--n", type=_ranged(int, 0), default=16, help="number of samples to write (default 16)")
    p.add_argument("--out", metavar="DIR", help="output directory for the samples")
    p.add_argument("--start", type=_ranged(int, 0), default=0, help="index of the first sample (default 0)")
    p.add_argument("--seed", type=_ranged(int, 0), default=None, help="seed (default: train.seed of the config)")
    p.add_argument("--size", type=int, default=None, help="image side in px (default: synthesis.size)")
    p.add_argument(
        "--noise-scale",
        type=_ranged(float, 0.0, 1.0),
        default=1.0,
        help="curriculum knob in [0, 1]: how far noise parameters may go towards their harshest (default 1)",
    )
    p.add_argument(
        "--mixed-prob",
        type=_ranged(float, 0.0, 1.0),
        default=0.3,
        help="probability of 2-3 composed noise types per sample (default 0.3)",
    )
    p.add_argument("--clean", action="store_true", help="write the noise-free copies instead")
    p.add_argument("--grid", metavar="PNG", help="also render one figure of samples across noise types x levels")
    p.add_argument("--no-preview", action="store_true", help="skip the per-sample PNG previews")
    p.add_argument(
        "--labelled",
        action="store_true",
        help="write a labelled dataset (images/NAME.png 16-bit + masks/NAME.png) for data check, evaluate --data "
        "and data.labelled, instead of npz files",
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="synthesize in parallel Ray Data workers (embedded local Ray unless --address)",
    )
    p.add_argument("--address", default=None, help="Ray cluster address to join (with --ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "train",
        help="train on Ray Train (embedded local Ray unless --address)",
        description="Train with Ray Data synthesis streaming into Ray Train DDP workers, following "
        "the curriculum. Prints one line per epoch; at the end, where the best checkpoint is.",
    )
    _add_config_args(p)
    p.add_argument(
        "--workers",
        type=_ranged(int, 1),
        default=None,
        help="training workers / DDP ranks (default: train.num_workers)",
    )
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (fp16 + GradScaler, NCCL)")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        default=None,
        help="fine-tune: start from this checkpoint's weights (a path, a bucket URI, shipped or "
        "shipped-v1; the same as --set train.init=CHECKPOINT)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto, host:port or ray://...); default: start an embedded local Ray",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue a run (its directory, or its URI for a bucket run) from its last checkpoint "
        "(synthesis/model config must not change)",
    )
    p.add_argument("--name", default=None, help="run directory name under train.storage_path (default: timestamped)")
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        metavar="N",
        help="pause after epoch N (checkpoint written); --resume continues exactly where it stopped",
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only warnings and the final summary")
    noise.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's own output (otherwise in RUN_DIR/ray.log and the Ray session's logs)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "sweep",
        help="sweep loss weights and model variants on Ray Tune (ASHA or FIFO), promote the best trial",
        description="Run a Ray Tune sweep over the config's tune.space: every trial is a full "
        "training run (curriculum, checkpoints, blank-mask guard) driven by validation Dice. "
        "One line per trial event; at the end results.csv/.md, parallel.png and curves.png in "
        "the sweep directory, and one W&B run per trial in the sweep's group.",
    )
    _add_config_args(p)
    p.add_argument("--resume", metavar="SWEEP_DIR", default=None, help="continue a stopped or killed sweep")
    p.add_argument(
        "--promote",
        metavar="SWEEP_DIR",
        default=None,
        help="export the best trial's best checkpoint (with --out) instead of sweeping",
    )
    p.add_argument("--out", metavar="FILE", default=None, help="where --promote writes the checkpoint (*.safetensors)")
    p.add_argument("--report", metavar="SWEEP_DIR", default=None, help="rewrite and print a sweep's results table")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto, host:port); default: start an embedded local Ray",
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only errors and the final table")
    noise.add_argument("--verbose", action="store_true", help="also show Ray's own output")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "data",
        help="check a labelled dataset (image/mask pairs in a folder or bucket) and summarize it",
        description="dotseg data check DIR|URI: find the image/mask pairs (images/NAME + masks/NAME, or "
        "NAME.png + NAME.mask.png), read every file, and report every problem in one line per kind "
        "(unpaired files, unreadable files, size mismatches, masks that are not binary); else the summary: "
        "count, sizes, foreground fraction, estimated SNR, in-distribution verdicts, content digest.",
    )
    p.add_argument("action", choices=("check",), help="what to do with the dataset")
    p.add_argument("location", metavar="DIR|URI", help="a folder, or an s3:// / gs:// prefix")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="judge 'in distribution' against this model's training data (default: the shipped model's)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "evaluate",
        help="benchmark a checkpoint against the classical baseline, by SNR and noise type",
        description="Evaluate on a fixed, seeded benchmark set (every noise type across its full "
        "severity range, mixed noise, clean images, both dot placements): per-sample Dice, "
        "IoU, precision, recall, HD95, boundary F1; tables by SNR bin and noise type, model "
        "and baseline side by side; report.json, report.md and plots.",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint to evaluate: a path, an s3:// / gs:// URI, or a shipped model's name (shipped, shipped-v1); "
        "default: the model shipped with the package",
    )
    p.add_argument("--baseline", action="store_true", help="evaluate the classical baseline alone")
    p.add_argument(
        "--data",
        metavar="DIR|URI",
        default=None,
        help="evaluate on your own labelled images instead (images/NAME + masks/NAME, or NAME + NAME.mask; "
        "see `dotseg data check`): the same metrics, the baseline beside the model, bins by estimated SNR",
    )
    p.add_argument(
        "--gate",
        action="store_true",
        help="run the precision gate instead: every installed engine in fp32 and in bf16 (where this CPU computes "
        "it natively) on the standard benchmark; a precision within 0.002 Dice of fp32 in every SNR bin, with "
        "every mask agreeing >= 0.99, is recorded for this model and CPU and used by precision auto (--n "
        "below 1000 previews without recording); --threads default 1",
    )
    _add_config_args(p)
    p.add_argument(
        "--suite",
        choices=("standard", "stratified", "shift"),
        default="standard",
        help="standard: the benchmark mix; stratified: --n images in every SNR bin (< 0 dB included); "
        "shift: the benchmark with one generator axis moved at a time, --n images per level",
    )
    p.add_argument(
        "--n",
        type=_ranged(int, 1),
        default=None,
        help="images: in all (standard, default 1000), per SNR bin (stratified, default 150) or per level "
        "(shift, default 150)",
    )
    p.add_argument(
        "--size",
        type=_ranged(int, 32, 4096),
        default=None,
        help="image side in px (default: the checkpoint's, 512 for the seed)",
    )
    p.add_argument("--out", default=None, help="report directory (default runs/eval-<time>)")
    p.add_argument("--seed", type=int, default=None, help="benchmark seed (default: the fixed benchmark seed)")
    p.add_argument("--tolerance", type=float, default=2.0, help="boundary F1 tolerance in px (default 2)")
    p.add_argument("--threads", type=_ranged(int, 1), default=None, help="CPU threads for the model (default: torch's)")
    p.add_argument("--wandb", action="store_true", help="also log the tables and plots to W&B (offline by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "curriculum",
        help="print the epoch -> phase, noise and loss-weight table",
        description="Print, for every epoch of the configured run, the curriculum phase, its "
        "noise_scale and mixed_prob, and the loss weights (Dice, BCE, boundary).",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_curriculum)

    p = sub.add_parser(
        "config",
        help="print the resolved config and its hash, or explain every key",
        description="Resolve defaults + YAML + --set overrides, validate, and print the result "
        "with its stable hash. Invalid configs exit with status 2 and name the key.",
    )
    _add_config_args(p)
    p.add_argument("--explain", action="store_true", help="list every key with its type, default and meaning")
    p.add_argument(
        "--schema",
        metavar="PATH",
        nargs="?",
        const="-",
        default=None,
        help="write the config's JSON Schema to PATH (or stdout): editors then complete and check configs/*.yaml",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP on Ray Serve (embedded local Ray unless --address)",
        description="Start the Ray Serve app (autoscaling replicas, dynamic batching) with its HTTP API, "
        "OpenAPI docs and dashboard; print their URLs; Ctrl-C stops Serve and the Ray it started.",
    )
    _add_config_args(p)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint to serve, a path or s3:// / gs:// URI, or a shipped model's name ('shipped', "
        "'shipped-v1') (default: serve.checkpoint, else the "
        "shipped model; with --detach on a running app: the model it serves)",
    )
    p.add_argument("--host", default=None, help="interface to bind (default: serve.host = 127.0.0.1)")
    p.add_argument("--port", type=_ranged(int, 1, 65535), default=None, help="HTTP port (default: serve.port = 8000)")
    p.add_argument(
        "--address", default=None, help="Ray cluster to join (auto, host:port); default: an embedded local Ray"
    )
    p.add_argument("--verbose", action="store_true", help="show Ray's own log lines")
    p.add_argument(
        "--detach", action="store_true", help="with --address: return once the app is ready, leaving it running"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "submit",
        help="run train / sweep / evaluate / serve / predict as a Ray job on a cluster (Jobs API)",
        description="Submit `dotseg JOB` to a Ray cluster's Jobs API: the project directory is uploaded "
        "as the job's working_dir (without .git, virtual environments, runs, W&B and checkpoint "
        "folders), W&B settings travel with it, logs stream back until it ends, and the exit status "
        "is the job's (0 SUCCEEDED, 1 FAILED, 130 STOPPED). Arguments after -- go to the command "
        "(e.g. dotseg submit evaluate --address URL -- --checkpoint /shared/best.safetensors). "
        "Token-auth clusters need RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH.",
    )
    p.add_argument("job", choices=JOBS, help="the dotseg command to run")
    p.add_argument(
        "--address",
        required=True,
        help="the cluster's Jobs API (its dashboard), e.g. http://127.0.0.1:8265 through an SSH tunnel",
    )
    _add_config_args(p)
    p.add_argument("--no-wait", action="store_true", help="submit, print the id and return")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "jobs",
        help="list, inspect, follow or stop Ray jobs on a cluster",
        description="Look at the cluster's Ray jobs through its Jobs API.",
    )
    p.add_argument(
        "action", choices=("list", "status", "logs", "stop"), help="list jobs, or one job's status, logs or stop"
    )
    p.add_argument("id", nargs="?", default=None, help="submission id (dotseg-train-...)")
    p.add_argument("--address", required=True, help="the cluster's Jobs API, e.g. http://127.0.0.1:8265")
    p.add_argument("--follow", action="store_true", help="with logs: stream until the job ends")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser(
        "predict",
        help="segment image files with a trained model",
        description="Predict the shape mask of each input image (.png 8/16-bit, .tif/.tiff, "
        ".npy; colour is converted to grey by luma). Writes <stem>_mask.png (0/255), "
        "and with --prob <stem>_prob.npy (float32), with --overlay <stem>_overlay.png. "
        "A file that cannot be read is reported and skipped; the exit status is "
        "then 1. An unusable checkpoint exits with status 2.",
    )
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        default=None,
        help="dotseg checkpoint (*.safetensors), its s3:// / gs:// URI, or a shipped model's name (shipped, "
        "shipped-v1); default: the model shipped with the package, if one is installed",
    )
    p.add_argument(
        "--input",
        "-i",
        metavar="FILE_OR_DIR",
        nargs="+",
        required=True,
        help="image files and/or directories (every supported file in them, sorted)",
    )
    p.add_argument("--output", "-o", metavar="DIR", required=True, help="directory for the outputs")
    p.add_argument("--prob", action="store_true", help="also write the probability map as <stem>_prob.npy")
    p.add_argument("--overlay", action="store_true", help="also write the image with the mask outline")
    p.add_argument(
        "--threshold",
        type=_ranged(float, 0.0, 1.0, open_interval=True),
        default=None,
        help="probability threshold for the mask (default: the checkpoint's)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--threads", type=_ranged(int, 1), default=None, help="CPU threads for torch (default: torch's choice)"
    )
    p.add_argument(
        "--engine",
        choices=("auto", "eager", "onnxruntime", "openvino"),  # dotseg.inference.engines (imports torch)
        default="auto",
        help="CPU inference engine: auto (default) = OpenVINO if installed (pip install 'dotseg[fast]'), "
        "else ONNX Runtime if installed, else eager PyTorch; the exported model is cached beside the checkpoint",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),  # dotseg.inference.precision.PRECISIONS
        default="auto",
        help="auto (default): the fastest reduced precision that passed `dotseg evaluate --gate` for this model on "
        "this CPU, else fp32; fp32: exact; bf16: refused unless it passed the gate",
    )
    p.add_argument(
        "--runner",
        choices=("auto", "local", "ray"),
        default="auto",
        help="local: this process; ray: Ray Data, an actor pool of predictors writing a manifest, resumable; "
        "auto (default): ray for bucket URIs, --address or more than 5000 files, else local",
    )
    p.add_argument("--address", default=None, help="Ray cluster to run on (auto, host:port); implies --runner ray")
    p.add_argument(
        "--actors",
        type=_actors,
        default=(1, 1),
        metavar="N|MIN-MAX",
        help="Ray runner: predictor actors, a fixed number or an autoscaling range (default 1); each takes "
        "--threads CPUs (default: up to 4 threads per actor)",
    )
    p.add_argument(
        "--no-describe",
        action="store_true",
        help="Ray runner: leave the manifest's estimated SNR and in-distribution columns empty (they cost "
        "about as much as the forward pass)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="Ray runner: predict every input again, even those the output's manifest lists as done",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if argv[:1] == ["submit"] and "--" in argv:  # `dotseg submit JOB ... -- ARGS`: ARGS are the job's
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    try:
        args = parser.parse_args(argv)
        args.passthrough = passthrough
    except SystemExit as e:  # --help (0) or a usage error (2, already printed): a status, not an exit
        return int(e.code or 0)
    import logging

    from dotseg.configbase import ConfigError
    from dotseg.runtime import configure_console

    # dotseg's library code logs; the CLI prints its records as plain `[dotseg] ...` lines.
    configure_console(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)

    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError) as e:
        print(f"dotseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `dotseg config | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"dotseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
