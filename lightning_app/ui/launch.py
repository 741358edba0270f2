"""``python -m lightning_app.ui``: parse (only ``--help``), read the settings, serve the page.

Gradio is imported only after the arguments are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from lightning_app.ui.settings import ENV_HELP, Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    """Run the page; return the exit code (2 with a one-line message on bad settings)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.ui",
        description="The Gradio demo page: uploads a brain MRI to TorchServe and shows its answer.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from lightning_app.ui.app import serve

    print(f"UI: http://{settings.host}:{settings.port} -> {settings.inference_url}", flush=True)
    try:
        serve(settings)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0
