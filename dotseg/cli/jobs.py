"""`dotseg submit` and `dotseg jobs`: Ray jobs on a cluster through its Jobs API."""

from __future__ import annotations

import argparse

from dotseg.cli.common import UserError, add_config_args
from dotseg.submit import COMMANDS as JOBS  # stdlib only at import


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


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
    add_config_args(p)
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
