"""``python -m genforge.cli``: the ``genforge`` command."""

import sys

from genforge.cli import main

sys.exit(main())
