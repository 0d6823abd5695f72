"""Ray job: train on the cluster the job runs on.

    ray job submit --address http://<head>:8265 --working-dir . -- \
        python jobs/train.py --config configs/default.yaml --workers 8 --gpu

Thin entry point: joins the job's cluster and hands over to ``dotseg train``. Use a
``train.storage_path`` every node can reach (shared filesystem) for multi-node runs.
"""

import sys

from dotseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--address", "auto", *sys.argv[1:]]))
