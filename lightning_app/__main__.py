"""``python -m lightning_app`` -> the LightningCLI."""

import sys

from lightning_app.cli import main

if __name__ == "__main__":
    main()
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()  # flush the run's record log before the process exits, not at interpreter teardown
