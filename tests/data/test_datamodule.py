"""The DataModule over real images: classes, names, batches, cache, both layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from lightning_app.data import cues
from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.data.sources import DataError
from tests.conftest import copy_subset
from tests.data.test_prepare import kaggle_tree


def test_batches_are_normalised_single_channel_tensors(small_br35h: Path, tmp_path: Path) -> None:
    dm = ImageFolderDataModule(
        str(small_br35h), class_map={"no": "no_tumor", "yes": "tumor"}, image_size=48, batch_size=16,
        cache_dir=str(tmp_path),
    )  # fmt: skip
    assert dm.num_classes == 2
    assert dm.class_names == ["no_tumor", "tumor"]
    assert dm.preprocessing_config == {"image_size": 48, "mean": 0.5, "std": 0.25}
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 48, 48) and images.dtype == torch.float32
    assert float(images.min()) >= -2.1 and float(images.max()) <= 2.1
    assert set(labels.tolist()) <= {0, 1}
    sizes = {split: len(dm.datasets[split]) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == 200 and 15 <= sizes["test"] <= 45  # whole near-duplicate groups
    assert len(dm.test_paths()) == sizes["test"]
    val_a = torch.cat([b[0] for b in dm.val_dataloader()])
    val_b = torch.cat([b[0] for b in dm.val_dataloader()])
    assert torch.equal(val_a, val_b)  # evaluation is not augmented


def test_decoded_pixels_are_cached_and_reused(small_br35h: Path, tmp_path: Path) -> None:
    ImageFolderDataModule(str(small_br35h), image_size=32, cache_dir=str(tmp_path)).setup()
    (cache,) = tmp_path.glob("*-32-d*.pt")
    stamp = cache.stat().st_mtime_ns
    dm = ImageFolderDataModule(str(small_br35h), image_size=32, cache_dir=str(tmp_path))
    dm.setup()
    assert cache.stat().st_mtime_ns == stamp
    assert len(dm.predict_dataloader().dataset) == len(dm.datasets["test"])  # type: ignore[arg-type]


def test_unprepared_four_class_kaggle_root_is_prepared_in_prepare_data(tmp_path: Path) -> None:
    root = kaggle_tree(tmp_path / "kaggle")
    dm = ImageFolderDataModule(str(root), image_size=32, cache_dir=str(tmp_path / "cache"))
    assert not (root / "split.csv").exists()  # __init__ only reads the class folders
    assert dm.num_classes == 4  # what the CLI links into the model at instantiation
    assert dm.class_names == ["glioma", "meningioma", "notumor", "pituitary"]
    dm.prepare_data()
    assert (root / "split.csv").is_file()
    assert not list(root.glob("*.partial")) and not list(root.glob(".*.partial"))
    dm.setup()
    assert len(dm.datasets["test"]) == 16


def test_class_map_for_absent_folders_warns(small_br35h: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="ignored: glioma"):
        dm = ImageFolderDataModule(str(small_br35h), class_map={"glioma": "Glioma"}, cache_dir=str(tmp_path))
    assert dm.class_names == ["no", "yes"]


def test_missing_folder_and_unsplittable_root_raise_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        ImageFolderDataModule(str(tmp_path / "nope"))
    root = copy_subset(tmp_path / "tiny", 1)
    dm = ImageFolderDataModule(str(root))
    with pytest.raises(DataError, match="is empty"):
        dm.prepare_data()


def test_balance_cues_draws_training_scans_so_framing_no_longer_tells_the_class(
    small_br35h: Path, tmp_path: Path
) -> None:
    """On real Br35H scans the fill share tells tumours apart; the balanced draws hide that."""
    plain = ImageFolderDataModule(str(small_br35h), image_size=64, cache_dir=str(tmp_path))
    plain.setup("fit")
    assert plain.train_weights is None
    assert not isinstance(plain.train_dataloader().sampler, WeightedRandomSampler)
    dm = ImageFolderDataModule(str(small_br35h), image_size=64, cache_dir=str(tmp_path), balance_cues=3)
    dm.setup("fit")
    train = dm.datasets["train"]
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler) and loader.drop_last
    assert dm.train_weights is not None and len(dm.train_weights) == len(train)
    fill = cues.of(train.pixels.numpy())[cues.NAMES[0]]
    tumour = train.labels.numpy() == 1
    torch.manual_seed(0)
    drawn = torch.cat([torch.tensor(list(loader.sampler)) for _ in range(20)]).numpy()
    assert cues.auroc(fill, tumour) > 0.6
    assert abs(cues.auroc(fill[drawn], tumour[drawn]) - 0.5) < abs(cues.auroc(fill, tumour) - 0.5) / 2
    assert dm.val_dataloader().sampler is not loader.sampler and len(dm.datasets["val"]) == len(
        plain.datasets["val"]
    )
