"""Ray job: a sweep on the cluster the job runs on.

    ray job submit --address http://<head>:8265 --working-dir . -- \
        python jobs/sweep.py --config configs/sweep.yaml --set train.storage_path=/shared/runs

Thin entry point: joins the job's cluster and hands over to ``dotseg sweep`` (also ``--resume DIR``
and ``--promote DIR --out FILE``). Trials run wherever the cluster has room; how many at once is
derived from the cluster's CPUs/GPUs. Use a ``train.storage_path`` every node can reach (shared
filesystem) so trials on any node write to the one sweep directory.
"""

import sys

from dotseg.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["sweep", *args] if "--promote" in args else ["sweep", "--address", "auto", *args]))
