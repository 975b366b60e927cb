"""``python -m spoofray <command> ...``: the same as the ``spoofray`` command."""

import sys

from spoofray.cli import main

sys.exit(main())
