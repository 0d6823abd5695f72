"""Ray job: predict a folder or bucket prefix of images on the cluster the job runs on, with Ray Data.

    dotseg submit predict --address http://<head>:8265 -- \
        --input s3://lab/scans/ --output s3://lab/masks/ --actors 2-16 --threads 2

Thin entry point: joins the job's cluster and hands over to ``dotseg predict --runner ray``. Inputs
and outputs must be reachable from every node (a bucket, or a shared mount); the manifest lands
in the output, and submitting the same job again resumes where a stopped one left off.
"""

import sys

from dotseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", "--runner", "ray", "--address", "auto", *sys.argv[1:]]))
