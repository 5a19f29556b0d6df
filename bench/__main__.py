"""``python -m bench``: runs ``bench.cli.main`` (the options and the run are there)."""

import sys

from bench.cli import main

sys.exit(main())
