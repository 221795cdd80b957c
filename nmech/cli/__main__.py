"""``python -m nmech.cli``: the ``nmech`` command."""

import sys

from nmech.cli import main

sys.exit(main())
