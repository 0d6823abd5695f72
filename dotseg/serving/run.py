"""Starting the app: what ``dotseg serve`` does, as library calls.

    urls = start(cfg.serve)          # embedded local Ray (or join one with address=...), Serve, the app
    wait_ready(urls["api"])           # the model is loaded and passed its warm-up prediction
    roll_out(cfg.serve, "runs/x/best.safetensors")   # a new checkpoint, no request lost
    stop()                            # Serve, and the Ray this process started

The HTTP proxy binds ``serve.host`` (127.0.0.1 unless configured) and ``serve.port``; requests slower
than ``serve.request_timeout_s`` get 408 from the proxy.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dotseg.serving.config import ServeConfig

APP_NAME = "dotseg"


class ServeError(RuntimeError):
    """The app cannot start or be updated; the message says why and what to do."""


def check_checkpoint(checkpoint: str | None, precision: str = "auto", local: bool = True, engine: str = "auto") -> None:
    """Refuse an unusable checkpoint here, before any replica tries it (one line, CheckpointError);
    on an embedded Ray (``local``: the replicas share this CPU) also a reduced ``precision`` that has
    not passed the gate for the engine the replicas will run (ServeError), decided as they decide it."""
    import torch

    from dotseg.checkpoint import read_meta
    from dotseg.inference import engines
    from dotseg.inference import precision as gate
    from dotseg.inference.predictor import is_shipped, resolve_checkpoint
    from dotseg.storage import is_uri, local_copy

    path = resolve_checkpoint(checkpoint)
    meta = read_meta(path)  # the header only (cached): the replicas load the tensors
    if local and precision not in ("auto", "fp32"):
        local_path = Path(local_copy(str(path))) if is_uri(path) else Path(path)  # where the replicas' cache is
        record = gate.load_record(engines.cache_dirs(local_path, is_shipped(local_path)), meta.model_id)
        try:
            gate.choose(record, engines.resolve_engine(engine, torch.device("cpu")), precision, engine != "auto")
        except ValueError:
            raise ServeError(
                f"serve.precision={precision}: it has not passed the precision gate for model {meta.model_id} on "
                "this CPU; run `dotseg evaluate --gate --checkpoint CHECKPOINT`, or use serve.precision=auto"
            ) from None


def until_stopped() -> None:
    """Block until Ctrl-C or SIGTERM (the foreground ``dotseg serve``; the caller then :func:`stop` s)."""
    import signal
    import threading

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


def urls(cfg: ServeConfig) -> dict[str, str]:
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    base = f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
    return {"api": base, "docs": f"{base}/docs", "dashboard": f"{base}/"}


def start(cfg: ServeConfig, address: str | None = None, quiet: bool = True) -> dict[str, str]:
    """Start Serve and the app (on an embedded local Ray unless ``address``); returns its URLs."""
    import ray
    from ray import serve

    from dotseg.runtime import init_ray
    from dotseg.serving.app import build

    check_checkpoint(cfg.checkpoint, cfg.precision, local=address is None, engine=cfg.engine)
    if address is None and not ray.is_initialized() and cfg.ingress in ("auto", "haproxy"):
        haproxy_env()  # inherited by the Ray that init_ray starts
    init_ray(address, num_cpus=None, quiet=quiet)
    http = http_options(cfg)
    if address is None:
        serve.start(http_options=http)
    else:
        # On a cluster, one proxy on the head (as configs/serve.yaml says): the address users were
        # given. With Serve's default (a proxy on every node with a replica), nodes that share a
        # machine would race for the same host:port.
        serve.start(proxy_location="HeadOnly", http_options=http)
    check_http_options(http)
    check_ingress(cfg.ingress)
    try:
        serve.run(build(cfg.to_dict()), name=APP_NAME, route_prefix=cfg.route_prefix, blocking=False)
    except RuntimeError:  # the replicas failed to start: say why, in one line
        raise ServeError(
            f"the app did not start: {_replica_error()} (checkpoint {cfg.checkpoint or 'shipped model'})"
        ) from None
    return urls(cfg)


def running_ingress() -> str | None:
    """The ingress of the connected Ray's Serve: ``haproxy`` (its proxies are HAProxy managers),
    ``proxy``, or None where Ray's state API cannot tell (e.g. a cluster without its dashboard)."""
    import ray
    from ray.util.state import list_actors

    try:
        actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")])
    except Exception:  # no dashboard / state API on that cluster
        return None
    names = {a["class_name"] for a in actors} & {"HAProxyManager", "ProxyActor"}
    return "haproxy" if "HAProxyManager" in names else "proxy" if names else None


def check_ingress(wanted: str) -> None:
    """Refuse, in one line, an explicit ``serve.ingress`` that the running Serve does not use (it is
    fixed when Ray starts); ``auto`` takes what runs."""
    running = running_ingress() if wanted != "auto" else None
    if running is not None and running != wanted:
        raise ServeError(
            f"serve.ingress={wanted}: the running Ray's Serve uses {running} (the ingress is chosen when Ray "
            f"starts: RAY_SERVE_ENABLE_HA_PROXY=1 on its nodes for HAProxy); use serve.ingress=auto or "
            f"serve.ingress={running}, or stop that Ray first"
        )


class _AppliedOptions(logging.Filter):
    """Drops Serve's "New http_options/controller_options will not be applied" once
    :func:`check_http_options` has verified that the running ones are ours (``serve.run`` logs it on
    every call, with nothing to apply)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will not be applied" not in record.getMessage()


def http_options(cfg: ServeConfig) -> dict[str, Any]:
    """The ``serve.*`` settings Serve takes when it first starts on a Ray, and keeps."""
    return {"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s}


def check_http_options(wanted: dict[str, Any]) -> None:
    """Serve fixes its HTTP options when it first starts on a cluster and keeps them, with one log
    line, when started again: refuse ``serve.*`` values that did not apply, in one line."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:  # serve.start just returned: there is a controller
        raise ServeError("Serve did not start (no controller); see the Ray session's serve logs")
    running = client.http_config
    differ = {k: getattr(running, k) for k, v in wanted.items() if getattr(running, k) != v}
    if differ:
        raise ServeError(
            "Serve already runs on this Ray with other HTTP options, which it keeps: "
            + ", ".join(f"serve.{k}={wanted[k]!r} (running: {v!r})" for k, v in differ.items())
            + "; use the running values, or stop Serve first (`serve shutdown`, or `dotseg submit serve "
            "--stop` on a cluster)"
        )
    logging.getLogger("ray.serve").addFilter(_APPLIED)


_APPLIED = _AppliedOptions()


#: HAProxy as Ray starts it, with its stats page and Prometheus exporter moved to loopback. Ray 2.60
#: renders them as ``bind :PORT`` / ``bind *:PORT`` (every interface) and offers no setting; it
#: does take another binary (``RAY_SERVE_HAPROXY_BINARY_PATH``) and always passes ``-f CONFIG``, so
#: this wrapper rewrites those two sections' bind lines and then becomes the real binary (``exec``:
#: the same PID, which Ray's reloads signal). The app's own frontend keeps ``serve.host``.
_HAPROXY_WRAPPER = """#!/bin/sh
# dotseg: {real} with its stats and metrics listeners on 127.0.0.1 (see dotseg.serving.run).
cfg=""; prev=""
for a in "$@"; do [ "$prev" = "-f" ] && cfg="$a"; prev="$a"; done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
  awk '/^[^[:space:]#]/ {{ sec = $1 " " $2 }}
       (sec == "frontend prometheus" || sec == "listen stats") && $1 == "bind" {{
           sub(/bind[[:space:]]+[*]?:/, "bind 127.0.0.1:") }}
       {{ print }}' "$cfg" > "$cfg.dotseg" && mv "$cfg.dotseg" "$cfg"
fi
exec "{real}" "$@"
"""


def haproxy_env() -> Path:
    """Environment of the HAProxy ingress on an embedded Ray: Ray 2.60 creates HAProxy's admin socket
    with mode 666 in a shared /tmp directory (any local user could reconfigure the proxy); here it
    lives in a private directory (0700) of this process, so only its owner reaches it. HAProxy's
    stats page and Prometheus exporter, which Ray binds on every interface, listen on loopback
    (:data:`_HAPROXY_WRAPPER`). Returns the directory."""
    from ray.serve._private.haproxy import _resolve_haproxy_binary  # get_haproxy_binary logs to the console

    # mkdtemp: mode 0700. Short: Ray puts the sockets one node-id directory (56 characters) deeper,
    # and HAProxy refuses a socket path over 97 characters.
    private = Path(tempfile.mkdtemp(prefix="dsh-", dir="/tmp" if os.path.isdir("/tmp") else None))
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_SERVE_HAPROXY_SOCKET_PATH", str(private / "admin.sock"))
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH", str(private / "metrics.sock"))
    wrapper = private / "haproxy"
    wrapper.write_text(_HAPROXY_WRAPPER.format(real=_resolve_haproxy_binary()))  # the user's binary too, if set
    wrapper.chmod(0o700)
    os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)
    # A stopping replica stays reachable this long "so load balancers can deregister" it (30 s by
    # default, which Ctrl-C waited out); here the balancer is Serve's own HAProxy, updated at once.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "3")
    return Path(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent


def haproxy_listeners() -> list[str]:
    """What the HAProxy ingress opens besides the app's port, for the console."""
    env = os.environ.get
    return [  # Ray's defaults (ray.serve._private.constants), read from the environment Ray reads
        f"HAProxy stats page on 127.0.0.1:{env('RAY_SERVE_HAPROXY_STATS_PORT', '8404')}",
        f"HAProxy Prometheus metrics on 127.0.0.1:{env('RAY_SERVE_HAPROXY_METRICS_PORT', '9101')}",
        f"HAProxy admin socket {env('RAY_SERVE_HAPROXY_SOCKET_PATH', '/tmp/haproxy-serve/admin.sock')}"
        " (in a directory only you can enter)",
    ]


def app_state() -> tuple[str | None, str | None]:
    """(the dotseg app's status on the connected cluster, or None if it has none; the checkpoint
    its deployment's user_config names, None for the shipped model)."""
    from ray.serve.context import _get_global_client

    try:
        client = _get_global_client()
        details = client.get_serve_details() if client is not None else {}
    except Exception:  # no Serve controller yet
        return None, None
    app = (details.get("applications") or {}).get(APP_NAME)
    if not app:
        return None, None
    for deployment in (app.get("deployments") or {}).values():
        user_config = (deployment.get("deployment_config") or {}).get("user_config") or {}
        if "checkpoint" in user_config:
            return app.get("status"), user_config["checkpoint"]
    return app.get("status"), None


#: App states a resubmission may roll out to; any other (UNHEALTHY, DEPLOY_FAILED, DELETING) is not
#: a model to keep.
_SERVING = ("RUNNING", "DEPLOYING")


def plan(status: str | None, keep_model: bool) -> str:
    """What a resubmission does to the app in ``status`` (None: there is none): ``start`` it, or
    ``roll_out`` to it. A scale-only resubmission (``keep_model``) to an app that is not serving is
    refused (ServeError, one line): starting the shipped model instead would swap the model
    without a word."""
    if status is None:
        return "start"
    if status in _SERVING or not keep_model:
        return "roll_out"
    raise ServeError(
        f"the dotseg app is {status}, so there is no running model to keep for a scale-only update; "
        "resubmit with --checkpoint naming the model to serve (a path, a URI or 'shipped'), or see `serve status`"
    )


def start_or_roll_out(
    cfg: ServeConfig, address: str, quiet: bool = True, keep_model: bool = False
) -> tuple[dict[str, str], bool]:
    """On a cluster: start the app, or, when it already runs there, roll ``cfg`` out to it: its
    checkpoint (``keep_model``: the one it serves now, e.g. to change only the replica counts) and
    its settings. No request fails; a checkpoint that fails on the replicas leaves the old one
    serving. Returns the URLs and whether it was a rollout (see :func:`plan` for an app that is
    not serving)."""
    from ray import serve

    from dotseg.runtime import init_ray

    check_checkpoint(cfg.checkpoint)
    init_ray(address, num_cpus=None, quiet=quiet)
    status, current = None, None
    try:
        serve.start(proxy_location="HeadOnly", http_options=http_options(cfg))
        status, current = app_state()
    except Exception:
        pass
    if plan(status, keep_model) == "start":
        return start(cfg, address=address, quiet=quiet), False
    check_http_options(http_options(cfg))  # a port or timeout the running Serve would not take: say so
    roll_out(cfg.replace(checkpoint=current), current if keep_model else cfg.checkpoint)
    return urls(cfg), True


def roll_out(cfg: ServeConfig, checkpoint: str | None) -> ServeConfig:
    """Serve ``checkpoint`` from now on: checked here first, then every replica loads and warms it up
    before swapping (``reconfigure``), so no request fails. Returns the new config."""
    from ray import serve

    from dotseg.serving.app import build

    check_checkpoint(checkpoint)
    check_warmup(checkpoint, cfg)
    new = cfg.replace(checkpoint=checkpoint)
    try:
        serve.run(build(new.to_dict()), name=APP_NAME, route_prefix=cfg.route_prefix, blocking=False)
    except RuntimeError:
        # The new replicas failed to start (Serve kept the old ones); make the old config the target
        # again, so Serve stops retrying, and say why.
        reason = _replica_error()
        serve.run(build(cfg.to_dict()), name=APP_NAME, route_prefix=cfg.route_prefix, blocking=False)
        raise _not_rolled_out(checkpoint, reason, cfg) from None
    return new


def _not_rolled_out(checkpoint: str | None, reason: str, cfg: ServeConfig) -> ServeError:
    return ServeError(
        f"checkpoint {checkpoint!r} was not rolled out: {reason}; "
        f"the previous model ({cfg.checkpoint or 'shipped model'}) keeps serving"
    )


def check_warmup(checkpoint: str | None, cfg: ServeConfig) -> None:
    """The replicas' warm-up (load, predict the known sample, check the mask), run here first: a
    rollout swaps models in place, and a model that fails it is refused before any replica loads it
    (ServeError, one line). On the replicas' engine: a new model's export (~15 s on 2 cores) then
    happens once, here, and replicas on this machine find it cached instead of each leaving the
    rotation for that long."""
    from dotseg.serving.app import load_warm

    try:
        load_warm(checkpoint, cfg)
    except Exception as e:  # CheckpointError, a blank or non-finite warm-up mask
        raise _not_rolled_out(checkpoint, " ".join(str(e).split()), cfg) from None


def _replica_error() -> str:
    """The last line of the error the app's replicas failed with, from Serve's status."""
    from ray import serve

    status = serve.status().applications.get(APP_NAME)
    messages = [status.message] if status else []
    if status:
        messages += [d.message for d in status.deployments.values()]
    lines = [line.strip() for m in messages for line in (m or "").splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or "failed" in line]
    return (errors or lines or ["unknown (see the Ray session's serve logs)"])[-1]


def wait_ready(api: str, timeout_s: float = 180.0) -> dict[str, Any]:
    """Poll ``/ready`` until it answers 200; its body (the model's identity)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/ready", timeout=5) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(0.5)
    raise ServeError(
        f"{api}/ready did not answer 200 within {timeout_s:.0f} s (last: {last}); "
        "see `serve status` and the Ray session logs"
    )


def stop() -> None:
    """Shut Serve down and, if this process started Ray, Ray with it (no process left behind)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
