"""``python -m dotseg.cli``: the ``dotseg`` command."""

import sys

from dotseg.cli import main

sys.exit(main())
