"""Ray job: deploy the Serve app on the job's cluster, or roll a new checkpoint out to it.

    dotseg submit serve --address http://<head>:8265 -- --checkpoint /shared/best.safetensors

Thin entry point: ``dotseg serve --address auto --detach``. When the app already runs, the new
checkpoint is rolled out to it (new replicas load and warm up before the old ones stop, so no
request fails; a checkpoint that fails on the replicas leaves the old model serving). The job
ends once the app is ready; the app keeps running on the cluster.
"""

import sys

from dotseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "--address", "auto", "--detach", *sys.argv[1:]]))
