"""Ray job: evaluate a checkpoint on the benchmark, on a node of the job's cluster.

    dotseg submit evaluate --address http://<head>:8265 -- --checkpoint /shared/runs/x/best.safetensors --n 1000

Thin entry point: hands over to ``dotseg evaluate`` (which needs no Ray: it runs in the job's
driver process). Write ``--out`` to storage you can read back (shared storage on a cluster).
"""

import sys

from dotseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
