"""``python -m lightning_app.ui`` -> :func:`lightning_app.ui.launch.main`."""

import sys

from lightning_app.ui.launch import main

if __name__ == "__main__":
    sys.exit(main())
