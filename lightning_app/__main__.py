"""``python -m lightning_app`` -> the LightningCLI."""

from lightning_app.cli import main

if __name__ == "__main__":
    main()
