"""`dotseg serve`: the model over HTTP on Ray Serve."""

from __future__ import annotations

import argparse

from dotseg.cli.common import UserError, add_config_args, config_field, load_config_args


def cmd_serve(args: argparse.Namespace) -> int:
    from dotseg.checkpoint import CheckpointError
    from dotseg.config import Override
    from dotseg.serving import run

    overrides: list[Override] = list(args.overrides)
    # On a running app, no checkpoint given keeps its model (a rollout of new replica counts only);
    # `--checkpoint shipped` names the shipped model explicitly.
    keep_model = args.checkpoint is None and not any(o.startswith("serve.checkpoint=") for o in args.overrides)
    checkpoint = None if args.checkpoint == "shipped" else args.checkpoint
    if args.checkpoint is not None:
        overrides.append(("serve.checkpoint", checkpoint))
    for flag, key in ((args.host, "host"), (args.port, "port")):
        if flag is not None:
            overrides.append((f"serve.{key}", flag))
    cfg = load_config_args(argparse.Namespace(config=args.config, overrides=overrides)).serve
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
    if args.address is None and run.running_ingress() == "haproxy":
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
    try:
        run.until_stopped()
    finally:
        print("dotseg serve: stopping", flush=True)
        run.stop()
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP on Ray Serve (embedded local Ray unless --address)",
        description="Start the Ray Serve app (autoscaling replicas, dynamic batching) with its HTTP API, "
        "OpenAPI docs and dashboard; print their URLs; Ctrl-C stops Serve and the Ray it started.",
    )
    add_config_args(p)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint to serve, a path or s3:// / gs:// URI, or a shipped model's name ('shipped', "
        "'shipped-v1') (default: serve.checkpoint, else the "
        "shipped model; with --detach on a running app: the model it serves)",
    )
    p.add_argument("--host", default=None, help="interface to bind (default: serve.host = 127.0.0.1)")
    p.add_argument(
        "--port", type=config_field("serve.port"), default=None, help="HTTP port (default: serve.port = 8000)"
    )
    p.add_argument(
        "--address", default=None, help="Ray cluster to join (auto, host:port); default: an embedded local Ray"
    )
    p.add_argument("--verbose", action="store_true", help="show Ray's own log lines")
    p.add_argument(
        "--detach", action="store_true", help="with --address: return once the app is ready, leaving it running"
    )
    p.set_defaults(func=cmd_serve)
