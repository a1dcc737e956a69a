"""``python -m vstain`` is the ``vstain`` command (``python -m vstain -c CONFIG`` trains)."""

import sys

from vstain.cli import main

sys.exit(main())
