"""``python -m sim``: the ``migsim`` command."""

import sys

from sim.cli import main

sys.exit(main())
