"""What every command shares: the one-line user error, the parser that reports usage errors in one
line, flag types checked by the config's own constraints, and the config and Ray-log arguments."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (``dotseg synth: error: argument --n: ...``), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def ranged(kind: type, lo: float | None = None, hi: float | None = None, *, open_interval: bool = False):
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


def actors(text: str) -> tuple[int, int]:
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
def ray_logs(args: argparse.Namespace) -> Iterator[None]:
    """Ray's own driver log lines go to a file under the cache dir, not between the progress lines."""
    from datetime import datetime

    from dotseg.logs import ray_logs_to
    from dotseg.storage import CACHE_DIR

    path = CACHE_DIR / "logs" / f"{args.command}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with ray_logs_to(path):
        yield


def add_config_args(p: argparse.ArgumentParser) -> None:
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


def load_config_args(args: argparse.Namespace) -> Any:
    from dotseg.config import load_config

    return load_config(args.config, args.overrides)


def config_field(key: str) -> Callable[[str], Any]:
    """An argparse ``type`` checked by the constraints of the config field ``key`` (``serve.port``,
    ``train.num_workers``): a flag that sets a config value is checked where the value's range is
    written, once, and a bad one is still a usage error naming the flag. The config modules are
    imported only when the flag is given, so ``--help`` stays instant."""

    def parse(text: str) -> Any:
        from dotseg.config import Config
        from dotseg.configbase import field_adapter

        adapter, allowed = field_adapter(Config, key)
        try:
            return adapter.validate_strings(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}") from None

    parse.__name__ = key  # argparse names the type in its messages
    return parse
