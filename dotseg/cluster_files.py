"""The parts of the cluster files (``cluster/``) generated from the project's own configs.

``configs/serve.yaml`` is the one source of the serving settings: the ``serveConfigV2`` of
``cluster/kuberay/rayservice.yaml`` is generated from it, with the in-cluster differences below, and
``tests/test_cluster_files.py`` fails when the committed block is stale. After editing
configs/serve.yaml, from the repository root::

    python -m dotseg.cluster_files            # rewrite the serveConfigV2 block in place
    python -m dotseg.cluster_files --check    # exit 1 if it is stale, change nothing
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from dotseg.config import Config, serve_file_section

__all__ = ["IN_CLUSTER_HTTP_HOST", "IN_CLUSTER_PROXY_LOCATION", "serve_config_v2", "render_rayservice", "main"]

#: The Serve proxy inside a pod listens on the pod's interface: KubeRay's serve Service (ClusterIP,
#: reachable only inside the Kubernetes cluster) and the readiness probe of serving pods reach it
#: there. It is not public: the manifests create no LoadBalancer, NodePort or Ingress (tested);
#: from outside, ``kubectl port-forward`` (cluster/README.md).
IN_CLUSTER_HTTP_HOST = "0.0.0.0"
#: A proxy on every pod that holds a replica: KubeRay marks a serving worker pod ready only when a
#: proxy runs on it, and its serve Service sends traffic to ready pods. With configs/serve.yaml's
#: HeadOnly, every serving worker pod would stay unready (the head runs no replicas there).
IN_CLUSTER_PROXY_LOCATION = "EveryNode"

DEFAULT_SERVE_CONFIG = Path("configs/serve.yaml")
DEFAULT_RAYSERVICE = Path("cluster/kuberay/rayservice.yaml")

_HEADER = (
    "# Generated from configs/serve.yaml by `python -m dotseg.cluster_files`: edit that file, not this block.\n"
    f"# In-cluster differences (dotseg/cluster_files.py says why): proxy_location {IN_CLUSTER_PROXY_LOCATION},\n"
    f"# http_options.host {IN_CLUSTER_HTTP_HOST} (the pod's interface, behind a ClusterIP Service only).\n"
)

# `serveConfigV2: |` and the indented lines of its block (generated blocks have no blank lines).
_BLOCK = re.compile(r"^(?P<indent>[ ]*)serveConfigV2:[ ]*\|[-+]?[ ]*\n(?P<body>(?:(?P=indent)[ ]+\S.*\n)*)", re.M)


def serve_config_v2(serve_yaml_text: str, source: str = str(DEFAULT_SERVE_CONFIG)) -> str:
    """The ``serveConfigV2`` string of the RayService: ``serve_yaml_text`` (a Ray Serve config file,
    configs/serve.yaml) with the in-cluster proxy location and HTTP host.

    The file is checked as ``dotseg serve --config`` checks it (one ``serve_app:build`` application,
    valid ``args``), so a mistake fails here rather than in the cluster.
    """
    data: Any = yaml.safe_load(serve_yaml_text)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a Ray Serve config (a mapping with `applications`)")
    Config.from_dict(serve_file_section(data, source))
    data = copy.deepcopy(data)
    data["proxy_location"] = IN_CLUSTER_PROXY_LOCATION
    http = data.get("http_options") or {}
    http["host"] = IN_CLUSTER_HTTP_HOST
    data["http_options"] = http
    return _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def render_rayservice(manifest_text: str, serve_yaml_text: str) -> str:
    """``manifest_text`` (rayservice.yaml) with its ``serveConfigV2: |`` block replaced by the one
    generated from ``serve_yaml_text``; everything else, comments included, is kept."""
    m = _BLOCK.search(manifest_text)
    if m is None:
        raise ValueError("no `serveConfigV2: |` block found in the RayService manifest")
    pad = m["indent"] + "  "
    body = "".join(f"{pad}{line}\n" for line in serve_config_v2(serve_yaml_text).splitlines())
    return f"{manifest_text[: m.start()]}{m['indent']}serveConfigV2: |\n{body}{manifest_text[m.end() :]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dotseg.cluster_files",
        description="Regenerate the serveConfigV2 of the RayService manifest from the Serve config file.",
    )
    p.add_argument("--serve-config", type=Path, default=DEFAULT_SERVE_CONFIG, help="default: %(default)s")
    p.add_argument("--manifest", type=Path, default=DEFAULT_RAYSERVICE, help="default: %(default)s")
    p.add_argument("--check", action="store_true", help="exit 1 if the manifest is stale; write nothing")
    args = p.parse_args(argv)
    for path in (args.serve_config, args.manifest):
        if not path.is_file():
            print(f"{path}: not found (run from the repository root, or pass the paths)", file=sys.stderr)
            return 2
    current = args.manifest.read_text()
    try:
        wanted = render_rayservice(current, args.serve_config.read_text())
    except ValueError as e:  # ConfigError is a ValueError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    if wanted == current:
        print(f"{args.manifest}: serveConfigV2 is up to date with {args.serve_config}")
        return 0
    if args.check:
        print(f"{args.manifest}: serveConfigV2 is stale; run: python -m dotseg.cluster_files", file=sys.stderr)
        return 1
    args.manifest.write_text(wanted)
    print(f"{args.manifest}: serveConfigV2 regenerated from {args.serve_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
