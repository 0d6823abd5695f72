"""The Ray Serve application of dotseg, for Serve's own tools.

    serve run configs/serve.yaml                 # (import_path: serve_app:build)
    serve run serve_app:build checkpoint=runs/x/best.safetensors max_replicas=4

``build`` takes the ``serve`` section of the dotseg config (``dotseg.serving.config.ServeConfig``):
unknown keys, wrong types and out-of-range values are refused with the key's name. ``dotseg serve``
is the friendlier way to start it.
"""

from dotseg.serving.app import build

__all__ = ["build"]
