"""Self-supervised pretraining (SimCLR) on the scans a run trains on, as a fit callback.

Issue 18's last lever: no pretrained weights can be downloaded here, so the backbone learns
from the training images themselves first, without their labels. Two random views of each
scan (:class:`~lightning_app.data.augment.ContrastiveView`: crop, flip, intensity jitter) go
through the backbone and a small projector; the NT-Xent loss (Chen et al. 2020) pulls the two
views of a scan together and pushes the other scans of the batch away. Then the recipe's
supervised fit starts from that backbone (its classification layer stays freshly initialised).

Held out stays held out: the pretraining reads the run's TRAINING split only (in ``make cv``
the fold's inner training scans), so no validation or test scan is seen, not even unlabelled.
The weights are cached under ``cache`` keyed by everything that decides them (split, manifest
digest, seed, backbone, preprocessing, settings), so the seeds and folds of a study never
share one by mistake, and a re-run reuses its own. As a lever::

    make cv CV_NAME=selfsup CONFIG="configs/default.yaml configs/levers/selfsup.yaml"
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_app.data import manifest
from lightning_app.data.atomic import file_digest, write_atomic
from lightning_app.data.augment import ContrastiveView
from lightning_app.errors import ConfigError
from lightning_app.models.backbones import final_linear
from lightning_app.training.recorded import SPLIT_KEYS

#: Width of the projector's output (the space the contrastive loss compares views in).
PROJECTION_DIM = 128


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss for two ``[N, D]`` embeddings whose row ``i`` are views of one image.

    Each of the ``2N`` views is classified among the other ``2N - 1`` by cosine similarity
    over ``temperature``; its partner view is the right answer.
    """
    z = nn.functional.normalize(torch.cat([a, b]).float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(similarity, partner)


def _head_name(net: nn.Module) -> str:
    head = final_linear(net)
    return next(name for name, module in net.named_modules() if module is head)


def pretrain(
    net: nn.Module,
    pixels: torch.Tensor,
    view: ContrastiveView,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    temperature: float,
) -> list[float]:
    """Train ``net`` (all but its classification layer) by SimCLR on ``uint8 [N, 1, S, S]`` images.

    Returns the mean loss of each epoch. The classification layer is set aside for the
    length of the pretraining and put back unchanged; the projector is thrown away.
    """
    steps_per_epoch = len(pixels) // batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"self-supervised pretraining needs at least {batch_size} training images, got {len(pixels)}"
        )
    name = _head_name(net)
    head, width = net.get_submodule(name), final_linear(net).in_features
    net.set_submodule(name, nn.Identity())
    device = next(net.parameters()).device
    projector = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, PROJECTION_DIM)).to(device)
    params = [*net.parameters(), *projector.parameters()]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    losses: list[float] = []
    net.train()
    try:
        for _ in range(epochs):
            order, total = torch.randperm(len(pixels)), 0.0
            for step in range(steps_per_epoch):
                batch = pixels[order[step * batch_size : (step + 1) * batch_size]]
                views = torch.cat([view(batch), view(batch)]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    z = projector(net(views.contiguous(memory_format=torch.channels_last)))
                loss = nt_xent(z[: len(batch)], z[len(batch) :], temperature)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += float(loss.detach())
            losses.append(total / steps_per_epoch)
            if len(losses) % max(1, epochs // 4) == 0:  # a line now and then: it runs for minutes
                rank_zero_info(f"self-supervised: epoch {len(losses)}/{epochs}, NT-Xent {losses[-1]:.3f}")
    finally:
        net.set_submodule(name, head)
    return losses


class SelfSupervised(Callback):
    """Start a fit from a backbone pretrained by SimCLR on the run's own training scans.

    Args:
        epochs, batch_size, lr, temperature: the pretraining (AdamW, one-cycle schedule,
            NT-Xent at ``temperature``).
        crop, intensity: the views' smallest crop (share of the area) and jitter strength.
        size: the views' side in pixels (``None``: the recipe's ``image_size``); smaller is
            cheaper, and the convolutions carry over to the recipe's size.
        cache: folder of pretrained backbones, one file per setting (reused when it matches).

    """

    def __init__(
        self,
        epochs: int = 40,
        batch_size: int = 128,
        lr: float = 2e-3,
        temperature: float = 0.2,
        crop: float = 0.35,
        intensity: float = 1.0,
        size: int | None = None,
        cache: str = "runs/selfsup",
    ) -> None:
        valid = lr > 0 and temperature > 0 and 0 < crop <= 1 and (size is None or size >= 32)
        if epochs < 1 or batch_size < 2 or not valid:
            raise ConfigError(
                "SelfSupervised needs epochs >= 1, batch_size >= 2, lr > 0, temperature > 0, "
                "crop in (0, 1] and size >= 32 (or none)"
            )
        self.settings: dict[str, Any] = {
            "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "temperature": temperature, "crop": crop, "intensity": intensity, "size": size,
        }  # fmt: skip
        self.cache = Path(cache)

    def key(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Everything that decides the pretrained weights (the cache's key)."""
        datamodule: Any = getattr(trainer, "datamodule", None)
        hp = dict(datamodule.hparams)
        return {
            "split": {k: hp.get(k) for k in SPLIT_KEYS},
            "manifest": file_digest(manifest.path_of(Path(hp["data_dir"]))),
            "seed": os.environ.get("PL_GLOBAL_SEED"),
            "backbone": pl_module.hparams["backbone"],
            "in_channels": pl_module.hparams["in_channels"],
            "preprocessing": pl_module.hparams.get("preprocessing"),
            "settings": self.settings,
        }

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Pretrain (or load the cached pretraining) before the optimisers are made (fit only)."""
        if stage != "fit":
            return
        key = self.key(trainer, pl_module)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.cache / f"{key['backbone']}-{digest}.pt"
        net: nn.Module = pl_module.net  # type: ignore[assignment]
        name = _head_name(net)
        head = {f"{name}.{k}" for k in net.get_submodule(name).state_dict()}
        saved = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}
        if saved.get("key") == key:
            missing, unexpected = net.load_state_dict(saved["state_dict"], strict=False)
            if set(missing) != head or unexpected:
                raise ConfigError(f"{path}: its weights do not fit backbone {key['backbone']!r}")
            rank_zero_info(f"self-supervised: backbone from {path} (cached)")
            return
        datamodule: Any = getattr(trainer, "datamodule", None)
        pixels = datamodule.datasets["train"].pixels
        hp = datamodule.hparams
        view = ContrastiveView(
            mean=hp["mean"], std=hp["std"], size=self.settings["size"] or pixels.shape[-1],
            crop=self.settings["crop"], intensity=self.settings["intensity"],
        )  # fmt: skip
        started = time.perf_counter()
        net.to(getattr(getattr(trainer, "strategy", None), "root_device", "cpu"))  # a GPU pretrains too
        with torch.random.fork_rng(devices=[]):  # the fit draws the same numbers, cached or not
            losses = pretrain(
                net, pixels, view, epochs=self.settings["epochs"], batch_size=self.settings["batch_size"],
                lr=self.settings["lr"], temperature=self.settings["temperature"],
            )  # fmt: skip
        seconds = time.perf_counter() - started
        if not all(math.isfinite(x) for x in losses):
            raise ConfigError(f"self-supervised pretraining diverged (losses {losses}); lower its lr")
        state = {k: v.detach().cpu() for k, v in net.state_dict().items() if k not in head}
        record = {
            "key": key, "state_dict": state, "losses": losses, "images": len(pixels), "seconds": seconds,
        }  # fmt: skip
        write_atomic(path, lambda tmp: torch.save(record, tmp))
        rank_zero_info(
            f"self-supervised: {self.settings['epochs']} epochs on {len(pixels)} training scans in "
            f"{seconds / 60:.1f} min, NT-Xent {losses[0]:.3f} -> {losses[-1]:.3f}; saved {path}"
        )
