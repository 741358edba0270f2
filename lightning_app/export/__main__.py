"""``python -m lightning_app.export``: see :mod:`lightning_app.export.cli`."""

import sys

from lightning_app.export.cli import main

sys.exit(main())
