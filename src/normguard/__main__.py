"""``python -m normguard``: the same as the ``normguard`` command."""

import sys

from normguard.cli import main

sys.exit(main())
