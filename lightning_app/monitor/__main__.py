"""``python -m lightning_app.monitor``: see :mod:`lightning_app.monitor.cli`."""

import sys

from lightning_app.monitor.cli import main

sys.exit(main())
