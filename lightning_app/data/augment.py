"""Train-time augmentation on top of THE preprocessing (:class:`~lightning_app.transforms.EvalPreset`).

Only the DataModule uses it: serving never augments, so it lives with the data code.
"""

from __future__ import annotations

import torch

from lightning_app.data.headmask import head_mask
from lightning_app.transforms import EvalPreset


class IntensityJitter:
    """Random intensity changes of ``float`` images in ``[0, 1]`` (what drift brings).

    Each, with probability 1/2 and drawn apart for every image: contrast about the mean
    (factor ``1 +- 0.3 k``), brightness (``+- 0.08 k``), gamma (``exp(+- 0.3 k)``), Gaussian
    blur (sigma up to ``0.8 k`` pixels; the blurred images of one batch share a sigma) and
    Gaussian noise (sd up to ``0.03 k``); ``k`` is the strength (0: off).
    """

    def __init__(self, strength: float) -> None:
        self.k = strength

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Jitter one ``[1, S, S]`` image or a batch ``[N, 1, S, S]`` (values kept in ``[0, 1]``)."""
        from torchvision.transforms.v2 import functional as TF

        batch = x if x.dim() == 4 else x[None]
        shape, k = (batch.shape[0], 1, 1, 1), self.k

        def coin() -> torch.Tensor:
            return torch.rand(shape) < 0.5

        def uniform(half_width: float) -> torch.Tensor:
            return (torch.rand(shape) * 2 - 1) * half_width

        mean = batch.mean(dim=(1, 2, 3), keepdim=True)
        batch = torch.where(coin(), (batch - mean) * (1 + uniform(0.3 * k)) + mean, batch)
        batch = torch.where(coin(), batch + uniform(0.08 * k), batch)
        batch = torch.where(coin(), batch.clamp(0, 1) ** torch.exp(uniform(0.3 * k)), batch)
        blur = coin()
        if k > 0 and bool(blur.any()):
            sigma = 0.1 + float(torch.rand(())) * 0.8 * k
            blurred = TF.gaussian_blur(batch, kernel_size=[5, 5], sigma=[sigma, sigma])
            batch = torch.where(blur, blurred, batch)
        batch = torch.where(coin(), batch + torch.randn_like(batch) * torch.rand(shape) * 0.03 * k, batch)
        batch = batch.clamp(0, 1)
        return batch if x.dim() == 4 else batch[0]


class BackgroundSwap:
    """With probability ``p``, replace what lies outside the head of one ``uint8 [1, S, S]`` image.

    The head is :func:`~lightning_app.data.headmask.head_mask` dilated by 2 pixels (the whole
    skull stays); the rest becomes a random grey level (up to ``level`` of full scale) plus
    Gaussian noise (sd up to ``noise``). Borders, burnt-in text and the frame then say nothing
    about the label, so a model cannot learn them in place of the head. ``level = noise = 0``
    blacks the background out (``make bench-shortcut``). An image is left as it is when its
    mask is not a head: nearly none or nearly all of the image, or holding under 80 % of its
    brightness (a rim of skull found without the brain inside it).
    """

    def __init__(self, p: float, *, level: float = 0.4, noise: float = 0.08) -> None:
        self.p, self.level, self.noise = p, level, noise

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Swap the background of ``pixels`` (a new tensor; the cached one is not touched)."""
        if float(torch.rand(())) >= self.p:
            return pixels
        image = pixels[0].numpy()
        mask = head_mask(image, dilate=2)
        total = float(image.sum())
        if not 0.05 < mask.mean() < 0.98 or float(image[mask].sum()) < 0.8 * total:
            return pixels
        level = float(torch.rand(())) * self.level * 255
        noise = torch.randn(pixels.shape) * float(torch.rand(())) * self.noise * 255
        fill = (level + noise).round().clamp(0, 255).to(pixels.dtype)
        return torch.where(torch.from_numpy(mask)[None], pixels, fill)


class TrainPreset(EvalPreset):
    """Eval preset plus light augmentation suited to axial MRI slices.

    Horizontal flips (brains are near-symmetric) and a small random affine
    (rotation, translation, scale), applied to the ``uint8`` image before
    normalisation so padding stays black; then, with ``intensity > 0``,
    :class:`IntensityJitter` of that strength. With ``background > 0``, first
    :class:`BackgroundSwap` with that probability.
    """

    def __init__(
        self,
        *,
        mean: float,
        std: float,
        hflip_prob: float = 0.5,
        degrees: float = 10.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.9, 1.1),
        intensity: float = 0.0,
        background: float = 0.0,
    ) -> None:
        super().__init__(mean=mean, std=std)
        self.jitter = IntensityJitter(intensity) if intensity > 0 else None
        self.swap = BackgroundSwap(background) if background > 0 else None
        from torchvision.transforms import v2

        steps: list[torch.nn.Module] = []
        if hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(p=hflip_prob))
        if degrees > 0 or translate > 0 or scale != (1.0, 1.0):
            steps.append(v2.RandomAffine(degrees=degrees, translate=(translate, translate), scale=scale))
        self.augment = v2.Compose(steps or [v2.Identity()])  # no flip, no affine: augment nothing

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # tensors only: training
        """Augment one ``uint8`` image, then normalise."""
        if self.swap is not None:
            pixels = self.swap(pixels)
        pixels = self.augment(pixels)
        if self.jitter is None:
            return super().__call__(pixels)
        return (self.jitter(pixels.float() / 255.0) - self.mean) / self.std


class ContrastiveView(EvalPreset):
    """Random views of ``uint8`` images for contrastive pretraining (SimCLR), a batch at a time.

    Stronger than :class:`TrainPreset`, as contrastive learning needs: a random crop of
    ``crop`` to 100 % of the area resized to ``size`` (so two views share only part of the
    scan; ``size`` may be below the recipe's, to pretrain cheaply), a horizontal flip, then
    :class:`IntensityJitter` of ``intensity``; normalised as THE preprocessing normalises.
    """

    def __init__(
        self, *, mean: float, std: float, size: int, crop: float = 0.35, intensity: float = 1.0
    ) -> None:
        super().__init__(mean=mean, std=std)
        from torchvision.transforms import v2

        self.geometry = v2.Compose(
            [v2.RandomResizedCrop(size, scale=(crop, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        )
        self.jitter = IntensityJitter(intensity)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # tensors only: training
        """One view of each image of a ``uint8 [N, 1, S, S]`` batch: ``float32 [N, 1, size, size]``."""
        views = torch.stack([self.geometry(image) for image in pixels]).float() / 255.0
        return (self.jitter(views) - self.mean) / self.std
