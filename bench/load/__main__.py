"""``python -m bench.load``: run the load test (see ``bench.load.cli``)."""

import sys

from bench.load.cli import main

sys.exit(main())
