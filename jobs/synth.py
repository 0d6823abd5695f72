"""Ray job: synthesize a dataset on a cluster with Ray Data workers.

    ray job submit --address http://<head>:8265 --working-dir . -- \
        python jobs/synth.py --n 10000 --out /shared/dotseg-synth --config configs/default.yaml

Thin entry point: it joins the cluster the job runs on and hands over to ``dotseg synth --ray``.
"""

import sys

from dotseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", "--ray", "--address", "auto", *sys.argv[1:]]))
