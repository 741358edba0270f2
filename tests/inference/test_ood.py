"""The OOD guard: shrinkage, threshold, scores, artefact round trip, and the export step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_app.export.build import export
from lightning_app.export.ood import CORRUPTIONS, KEEPS, choose_keep
from lightning_app.inference import artefacts
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.forward import Forward
from lightning_app.inference.ood import (
    Mahalanobis,
    OODGuard,
    annotate,
    energy,
    ledoit_wolf,
    threshold_for,
)
from tests.inference.model_dirs import write_model_dir


def test_ledoit_wolf_shrinks_more_when_samples_are_few() -> None:
    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(20, 20, generator=generator, dtype=torch.float64)  # correlated, unequal variances
    many = torch.randn(5000, 20, generator=generator, dtype=torch.float64) @ mix
    few = torch.randn(15, 20, generator=generator, dtype=torch.float64) @ mix
    cov_many, s_many = ledoit_wolf(many - many.mean(0))
    cov_few, s_few = ledoit_wolf(few - few.mean(0))
    assert 0.0 <= s_many < 0.05 < s_few <= 1.0
    truth = mix.T @ mix
    assert float(np.linalg.norm(cov_many - truth.numpy()) / np.linalg.norm(truth.numpy())) < 0.1
    assert np.linalg.eigvalsh(cov_few).min() > 0  # invertible although n < p


def test_threshold_keeps_at_least_the_asked_fraction() -> None:
    scores = torch.arange(1, 201, dtype=torch.float64)  # 1..200
    threshold = threshold_for(scores, 0.99)
    assert threshold == 198.0
    assert float((scores <= threshold).double().mean()) >= 0.99
    assert float((scores <= threshold - 1).double().mean()) < 0.99


def test_far_features_score_higher_and_are_flagged(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    features = torch.randn(400, 8, generator=generator) + labels[:, None] * 4.0
    val = torch.randn(200, 8, generator=generator) + (torch.arange(200) % 2)[:, None] * 4.0
    guard = OODGuard.fit(features, labels, 2).calibrated(val)
    far = torch.full((3, 8), 12.0)
    assert (guard.scores(far) > guard.threshold).all()
    assert float((guard.scores(val) <= guard.threshold).mean()) >= 0.99
    blocks = guard.blocks(torch.cat([val[:1], far[:1]]))
    assert [b["ok"] for b in blocks] == [True, False]
    guard.save(tmp_path / artefacts.OOD_STATS)
    loaded = OODGuard.load(tmp_path)
    assert loaded is not None and loaded.threshold == guard.threshold
    assert np.allclose(loaded.scores(far), guard.scores(far))


def test_a_class_without_training_images_is_an_error() -> None:
    with pytest.raises(ValueError, match="every class"):
        OODGuard.fit(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), 2)


def test_annotate_adds_a_warning_only_when_not_ok() -> None:
    ok = annotate({}, {"ok": True, "score": 1.0, "threshold": 2.0})
    assert "warning" not in ok and ok["in_distribution"]["ok"]
    bad = annotate({}, {"ok": False, "score": 9.0, "threshold": 2.0})
    assert "does not look like the brain MRIs" in bad["warning"]


def test_energy_is_lower_for_confident_logits() -> None:
    scores = energy(torch.tensor([[10.0, 0.0], [0.1, 0.0]]))
    assert scores[0] < scores[1]


def test_engine_adds_the_block_to_every_answer(tmp_path: Path) -> None:
    root = write_model_dir(tmp_path)
    means = torch.zeros(2, 4, dtype=torch.float64)
    part = Mahalanobis("features", means, torch.eye(4, dtype=torch.float64))
    OODGuard((part,), threshold=1.0).save(root / artefacts.OOD_STATS)
    engine = InferenceEngine(root)
    forward = Forward(logits=torch.zeros(2, 2), features=torch.tensor([[0.1, 0, 0, 0], [3.0, 0, 0, 0]]))
    answers = engine.answers(forward)
    assert [a["in_distribution"]["ok"] for a in answers] == [True, False]
    assert answers[1]["in_distribution"]["score"] == pytest.approx(3.0)
    assert "warning" in answers[1] and "warning" not in answers[0]


def test_corruptions_keep_shape_and_dtype() -> None:
    pixels = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    pixels[:, :, :4] = 0  # a dark band above the "head"
    for name, corrupt in CORRUPTIONS.items():
        out = corrupt(pixels)
        assert out.shape == pixels.shape and out.dtype == torch.uint8, name
        assert not torch.equal(out, pixels), name


def test_export_step_fits_on_train_and_keeps_99_percent_of_val(
    trained_checkpoint: Path, small_br35h: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = export(trained_checkpoint, tmp_path / "model", data_dir=small_br35h)
    assert tmp_path / "model" / artefacts.OOD_STATS in exported.extra
    ood = json.loads(exported.meta.read_text())["ood"]
    assert ood["val_flagged"] <= 0.01
    assert ood["keep"] in KEEPS and list(ood["keep_group_cv_fpr"])[-1] == str(ood["keep"])
    assert ood["n"]["train"] > ood["n"]["val"] > 0
    printed = capsys.readouterr().out
    assert f"threshold {ood['threshold']:.3f}" in printed and "noise" in printed
    engine = InferenceEngine(tmp_path / "model")
    assert engine.ood is not None and engine.ood.threshold == pytest.approx(ood["threshold"])
    without = export(trained_checkpoint, tmp_path / "bare")
    assert "skipped" in without.metadata["ood"] and not (tmp_path / "bare" / artefacts.OOD_STATS).exists()


def test_ensemble_standardises_each_part_on_validation_and_flags_what_one_part_misses() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 2

    def sources(n: int, shift: float = 0.0) -> dict[str, torch.Tensor]:
        y = (torch.arange(n) % 2)[:, None].float()
        return {
            "features": torch.randn(n, 6, generator=generator) + y * 4.0,
            "stage_a": torch.randn(n, 3, generator=generator) * 10 + shift,  # another scale
        }

    names = ["features", "stage_a"]
    assert [p.source for p in OODGuard.fit(sources(600), labels, 2).parts] == ["stage_a"]  # default: stages
    val = sources(300)
    guard = OODGuard.fit(sources(600), labels, 2, names=names, combine="max").calibrated(val)
    assert [p.source for p in guard.parts] == ["features", "stage_a"]
    parts = guard.part_scores(val)
    assert np.abs(parts.mean(axis=1)).max() < 0.3 and np.abs(parts.std(axis=1, ddof=1) - 1).max() < 0.3
    assert float((guard.scores(val) <= guard.threshold).mean()) >= 0.99
    # normal penultimate features, but low-level statistics far from the scans': flagged
    odd = sources(50, shift=80.0)
    assert (guard.part_scores(odd)[0] < guard.threshold).mean() > 0.9
    assert (guard.scores(odd) > guard.threshold).all()
    summed = OODGuard.fit(sources(600), labels, 2, names=names, combine="sum").calibrated(val)
    assert np.allclose(summed.scores(val), summed.part_scores(val).sum(axis=0))
    with pytest.raises(ValueError, match="lacks the OOD guard's source"):
        guard.scores({"features": val["features"]})


def test_ensemble_round_trip_and_a_format_2_guard_still_loads(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(200) % 2
    train = {"features": torch.randn(200, 4, generator=generator), "stage_x": torch.randn(200, 5)}
    val = {"features": torch.randn(100, 4, generator=generator), "stage_x": torch.randn(100, 5)}
    guard = OODGuard.fit(train, labels, 2).calibrated(val)
    guard.save(tmp_path / artefacts.OOD_STATS)
    loaded = OODGuard.load(tmp_path)
    assert loaded is not None and loaded.combine == guard.combine and loaded.threshold == guard.threshold
    assert np.allclose(loaded.scores(val), guard.scores(val))
    # what format version 2 wrote: one Mahalanobis on the penultimate features, raw distances
    old = OODGuard.fit(train["features"], labels, 2).calibrated(val["features"])
    part = old.parts[0]
    torch.save(
        {
            "method": "mahalanobis",
            "means": torch.from_numpy(part.means),
            "precision": torch.from_numpy(part.precision),
            "threshold": old.threshold,
            "shrinkage": part.shrinkage,
        },
        tmp_path / artefacts.OOD_STATS,
    )
    v2 = OODGuard.load(tmp_path)
    assert v2 is not None and [p.source for p in v2.parts] == ["features"]
    forward = Forward(logits=torch.zeros(100, 2), features=val["features"])
    assert np.allclose(v2.scores(forward), part.distances(val["features"]))
    assert v2.threshold == old.threshold


def test_the_kept_fraction_grows_until_unseen_groups_are_flagged_at_most_1_percent() -> None:
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(400) % 2
    guard = OODGuard.fit({"stage_a": torch.randn(400, 4, generator=generator)}, labels, 2)
    # 100 validation groups of 5 near-copies: a group's scans share their offset
    offsets = torch.randn(100, 1, 4, generator=generator).expand(100, 5, 4).reshape(500, 4)
    val = {"stage_a": offsets + 0.05 * torch.randn(500, 4, generator=generator)}
    groups = [f"g{i // 5:03d}" for i in range(500)]
    keep, table = choose_keep(guard, val, groups)
    assert list(table) == [str(k) for k in KEEPS][: len(table)] and str(keep) == list(table)[-1]
    assert table[str(keep)] <= 0.01 or keep == KEEPS[-1]
    assert all(v > 0.01 for v in list(table.values())[:-1])
