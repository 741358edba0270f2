"""The LightningDataModule: a prepared image-folder root -> cached tensors -> loaders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from lightning_app.data import cues, folds, manifest
from lightning_app.data.augment import TrainPreset
from lightning_app.data.pixels import all_pixels
from lightning_app.data.sources import DataError, discover
from lightning_app.data.validate import prepare
from lightning_app.transforms import EvalPreset, Preprocessing


class CachedImages(Dataset[tuple[torch.Tensor, int]]):
    """Decoded ``uint8 [N, 1, S, S]`` pixels with labels and a per-sample transform."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, transform: EvalPreset) -> None:
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.pixels[index]), int(self.labels[index])


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over a root described by its ``split.csv`` manifest.

    Args:
        data_dir: image-folder root (``<class>/*`` or Kaggle ``Training``/``Testing``).
            Without a current ``split.csv`` it is prepared in ``prepare_data`` (leak-free,
            seeded split; see :mod:`lightning_app.data.manifest`).
        class_map: readable names for folder names, e.g. ``{no: no_tumor}``.
        image_size, mean, std, head_crop: the preprocessing; it travels with the model
            (``head_crop``: crop to the head and pad to a square before resizing).
        batch_size, num_workers: loader settings (decoded images are cached, so
            ``num_workers=0`` is usually fastest on a small CPU).
        hflip_prob, degrees, translate, scale: train-time augmentation.
        augmentation: strength multiplying ``degrees``, ``translate`` and the distance of
            ``scale`` from 1 (0: flips only; one knob for sweeps).
        intensity: strength of the train-time intensity jitter (contrast, brightness, gamma,
            blur, noise; :class:`~lightning_app.data.augment.IntensityJitter`; 0: off).
        background: probability of replacing a training image's background (all but the
            head) with random grey and noise (:class:`~lightning_app.data.augment.BackgroundSwap`;
            0: off).
        balance_cues: with ``n > 0``, training scans are drawn with replacement, weighted so
            that framing and brightness (:mod:`~lightning_app.data.cues`, each cut into ``n``
            quantile bins) no longer tell the class (0: off, plain shuffling).
        cache_dir: where decoded pixels are cached, keyed by manifest and size.
        seed: the split seed used when the root has to be prepared (and the CV folds' seed).
        cv_folds, cv_fold: with ``cv_fold=k``, outer fold ``k`` of a stratified grouped
            ``cv_folds``-fold split of the train+val groups is the test split and the rest is
            split again into inner train/val; the manifest's test split is not used
            (:func:`lightning_app.data.folds.cv_view`).
        shuffle_labels: a seed: permute labels across near-duplicate groups (the random-label
            control; a sound pipeline then scores chance).

    """

    def __init__(
        self,
        data_dir: str = "data/br35h",
        class_map: dict[str, str] | None = None,
        image_size: int = 128,
        mean: float = 0.5,
        std: float = 0.25,
        head_crop: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        hflip_prob: float = 0.5,
        degrees: float = 10.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.9, 1.1),
        augmentation: float = 1.0,
        intensity: float = 0.0,
        background: float = 0.0,
        balance_cues: int = 0,
        cache_dir: str = ".cache/pixels",
        seed: int = 42,
        cv_folds: int = 5,
        cv_fold: int | None = None,
        shuffle_labels: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(data_dir)
        if not self.root.is_dir():
            raise DataError(f"data folder not found: {self.root} (run 'make data' or pass DATA=<folder>)")
        self.labels = self._read_labels()
        if len(self.labels) < 2:  # before any model is built: a one-class "classifier" trains nothing
            raise DataError(
                f"{self.root}: one class only ({', '.join(self.labels)}): a classifier needs two or more"
            )
        unknown = set(class_map or {}) - set(self.labels)
        if unknown:  # e.g. the Br35H map applied to another data set: harmless, but say so
            warnings.warn(
                f"class_map entries for folders not in {self.root} ignored: {', '.join(sorted(unknown))}",
                stacklevel=2,
            )
        self.preprocessing = Preprocessing(image_size=image_size, mean=mean, std=std, head_crop=head_crop)
        self.rows: list[manifest.Row] = []
        self.datasets: dict[str, CachedImages] = {}
        self.train_weights: list[float] | None = None

    def _read_labels(self) -> list[str]:
        """Class names without preparing anything: the manifest's labels, else the folder names.

        The CLI links ``num_classes``/``class_names`` into the model when it instantiates
        the DataModule, before ``prepare_data`` runs, so this must stay cheap.
        """
        try:
            return sorted({row.label for row in manifest.read(manifest.path_of(self.root))})
        except (OSError, ValueError):  # no manifest yet, or an old one that prepare_data re-splits
            return sorted({sample.label for sample in discover(self.root)})

    def prepare_data(self) -> None:
        """Split the root if it has no current manifest (Lightning runs this on one process)."""
        path = manifest.path_of(self.root)
        try:
            manifest.read(path)
        except (OSError, ValueError):
            report = prepare(self.root, seed=self.hparams["seed"])
            if not report.ok:
                raise DataError(f"{self.root}: " + "; ".join(report.problems)) from None

    @property
    def num_classes(self) -> int:
        """Number of classes (folder names in the manifest)."""
        return len(self.labels)

    @property
    def class_names(self) -> list[str]:
        """Readable class names, index-aligned with the labels."""
        mapping = self.hparams["class_map"] or {}
        return [mapping.get(label, label) for label in self.labels]

    @property
    def preprocessing_config(self) -> dict[str, Any]:
        """The preprocessing as a plain dict (linked into the model's hyper-parameters)."""
        return self.preprocessing.as_dict()

    def setup(self, stage: str | None = None) -> None:
        """Decode (or load the cache) and build one dataset per split."""
        if self.datasets:
            return
        self.prepare_data()  # a no-op when prepared (DDP: rank 0 already did it)
        rows = manifest.read(manifest.path_of(self.root))
        self.labels = sorted({row.label for row in rows})
        pixels = all_pixels(
            self.root,
            rows,
            image_size=self.preprocessing.image_size,
            cache_dir=Path(self.hparams["cache_dir"]),
            head_crop=self.preprocessing.head_crop,
        )
        self.rows = self._view(rows)
        labels = torch.tensor([self.labels.index(row.label) for row in self.rows])
        hp = self.hparams
        eval_preset = EvalPreset(mean=hp["mean"], std=hp["std"])
        k = float(hp.get("augmentation", 1.0))
        low, high = hp["scale"]
        train_preset = TrainPreset(
            mean=hp["mean"], std=hp["std"], hflip_prob=hp["hflip_prob"],
            degrees=hp["degrees"] * k, translate=hp["translate"] * k,
            scale=(1 + (low - 1) * k, 1 + (high - 1) * k), intensity=float(hp.get("intensity", 0.0)),
            background=float(hp.get("background", 0.0)),
        )  # fmt: skip
        for split in manifest.SPLITS:
            index = torch.tensor(manifest.indices_of(self.rows, split), dtype=torch.long)
            preset = train_preset if split == "train" else eval_preset
            self.datasets[split] = CachedImages(pixels[index], labels[index], preset)
        bins = int(hp.get("balance_cues", 0))
        if bins > 0:
            train = self.datasets["train"]
            weights = cues.balancing_weights(train.pixels.numpy(), train.labels.numpy(), bins)
            self.train_weights = weights.tolist()

    def _view(self, rows: list[manifest.Row]) -> list[manifest.Row]:
        """The manifest as this run sees it: labels shuffled and/or CV splits (same length)."""
        hp = self.hparams
        if hp.get("shuffle_labels") is not None:
            rows = folds.shuffle_labels(rows, seed=int(hp["shuffle_labels"]))
        if hp.get("cv_fold") is not None:
            rows = folds.cv_view(rows, int(hp["cv_folds"]), int(hp["cv_fold"]), seed=int(hp["seed"]))
        return rows

    def _loader(self, split: str, *, shuffle: bool = False) -> DataLoader[tuple[torch.Tensor, int]]:
        workers = self.hparams["num_workers"]
        drop_last = shuffle and len(self.datasets[split]) > self.hparams["batch_size"]
        sampler = None
        if shuffle and self.train_weights is not None:  # weighted draws replace the shuffle
            sampler, shuffle = WeightedRandomSampler(self.train_weights, len(self.train_weights)), False
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams["batch_size"],
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        """Shuffled, augmented training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        """Validation batches (eval preset)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        """Held-out test batches (eval preset)."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        """Predict over the held-out test split."""
        return self._loader("test")

    def split_groups(self, split: str) -> list[str]:
        """Near-duplicate group ids of one split, in loader order (for group bootstraps)."""
        rows = self.rows or self._view(manifest.read(manifest.path_of(self.root)))
        return [row.group for row in manifest.rows_of(rows, split)]

    def test_paths(self) -> list[Path]:
        """Files of the test split, in loader order."""
        rows = self.rows or self._view(manifest.read(manifest.path_of(self.root)))
        return [self.root / row.path for row in manifest.rows_of(rows, "test")]
