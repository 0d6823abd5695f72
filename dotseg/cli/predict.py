"""`dotseg predict`: segment image files here, or at scale on Ray Data."""

from __future__ import annotations

import argparse
from pathlib import Path

from dotseg.cli.common import UserError, actors, config_field, ranged, ray_logs


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
        with ray_logs(args):
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
        type=config_field("train.threshold"),
        default=None,
        help="probability threshold for the mask (default: the checkpoint's)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--threads", type=ranged(int, 1), default=None, help="CPU threads for torch (default: torch's choice)"
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
        type=actors,
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
