"""``python -m hope`` is the ``hope`` command."""

import sys

from hope.cli import main

sys.exit(main())
