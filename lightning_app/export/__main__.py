"""``python -m lightning_app.export``: see :mod:`lightning_app.export.build`."""

import sys

from lightning_app.export.build import main

sys.exit(main())
