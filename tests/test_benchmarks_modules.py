"""The benchmarks are modules of the ``benchmarks`` package: ``python -m benchmarks.<name>``.

None of them edits ``sys.path``, and every ``make bench-*`` target runs its module with ``-m``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

BENCHES = sorted(p.stem for p in (REPO / "benchmarks").glob("bench_*.py"))


def test_no_benchmark_edits_sys_path() -> None:
    for path in (REPO / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path":
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), path.name


def test_every_make_target_runs_a_benchmark_as_a_module() -> None:
    make = (REPO / "Makefile").read_text()
    assert "python benchmarks/" not in make
    assert sorted(set(re.findall(r"python -m benchmarks\.(\w+)", make))) == BENCHES
    for name in BENCHES:
        assert 'if __name__ == "__main__":' in (REPO / "benchmarks" / f"{name}.py").read_text()


def test_a_benchmark_module_starts_with_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_decode", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--data" in result.stdout


def test_the_localisation_benchmark_chooses_on_out_of_fold_scans_never_the_test_split(small_br35h) -> None:
    from benchmarks.bench_localise import scans_of
    from lightning_app.data import manifest
    from lightning_app.data.folds import cv_view

    rows = manifest.read(manifest.path_of(small_br35h))
    test, which = scans_of(small_br35h, "yes", 5, None)
    assert which == "the test split" and test
    assert {r.split for r in test} == {"test"} and {r.label for r in test} == {"yes"}
    test_groups = {r.group for r in rows if r.split == "test"}
    for fold in range(5):
        held_out, which = scans_of(small_br35h, "yes", 5, fold)
        assert held_out and "test split unread" in which
        assert {r.label for r in held_out} == {"yes"}
        assert not {r.group for r in held_out} & test_groups
        trained_on = {r.group for r in cv_view(rows, 5, fold) if r.split in ("train", "val")}
        assert not {r.group for r in held_out} & trained_on  # the fold's checkpoint never saw them


def test_the_explain_benchmark_finds_hot_spots_with_the_served_and_the_occlusion_map(
    tmp_path: Path, small_br35h: Path
) -> None:
    """``make bench-explain``'s part 1 (and ``HEATMAP=occlusion``) on real held-out tumour scans."""
    from benchmarks.bench_explain import held_out, hot_spots
    from lightning_app.inference.engine import InferenceEngine
    from tests.inference.model_dirs import write_model_dir

    engine = InferenceEngine(write_model_dir(tmp_path / "model", "resnet18", size=128))
    files = held_out(small_br35h, "yes")[:4]
    assert files and all(f.parent.name == "yes" for f in files)
    for method in (None, "occlusion"):
        spots = hot_spots(engine, files, method)
        assert spots["n"] == len(files) and 0 <= spots["inside"] <= len(files)
        assert spots["ci95"][0] <= spots["rate"] <= spots["ci95"][1]


def test_the_brightness_reference_follows_the_scan_not_a_model() -> None:
    """``make bench-localise``'s model-free row: a map of each cell's brightness on the method's grid."""
    import numpy as np

    from benchmarks.bench_localise import brightness

    scan = np.zeros((1, 1, 128, 128), dtype=np.uint8)
    scan[0, 0, 32:96, 32:96] = 200  # a bright "head" in the middle, black around it
    head = np.zeros((1, 128, 128), dtype=bool)
    head[0, 32:96, 32:96] = True
    assert brightness(scan, head, 8)[0] > 0.85  # 16 px cells: the bilinear upsampling spills a little
    assert brightness(scan, head, 128)[0] == 1.0  # per pixel: all of it
    assert brightness(scan, head, 4)[0] < brightness(scan, head, 8)[0]  # coarse cells spill
    assert np.isnan(brightness(scan, head, 5)[0])  # a grid that does not tile the scan: no reference


def test_the_linear_probe_reads_separable_features_and_only_chance_from_noise() -> None:
    import torch

    from benchmarks.bench_probe import linear_probe

    torch.manual_seed(0)
    labels = torch.randint(0, 2, (400,))
    informative = torch.randn(400, 16) + 4 * labels[:, None].float()  # class shifts every feature
    accuracy, auroc = linear_probe(informative[:200], labels[:200], informative[200:], labels[200:])
    assert accuracy == 1.0 and auroc == 1.0
    noise = torch.randn(400, 16)
    accuracy, auroc = linear_probe(noise[:200], labels[:200], noise[200:], labels[200:])
    assert 0.35 < accuracy < 0.65 and 0.35 < auroc < 0.65


def test_the_probe_reads_the_final_layers_input_at_the_asked_size_and_refuses_another_folds_weights(
    small_br35h: Path, tmp_path: Path
) -> None:
    import pytest
    import torch

    from benchmarks.bench_probe import features, main
    from lightning_app.models.backbones import build_backbone

    net = build_backbone("resnet18", num_classes=2)
    pixels = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    assert features(net, pixels, mean=0.5, std=0.25, size=32).shape == (3, 512)
    other = tmp_path / "fold1.pt"
    torch.save({"key": {"split": {"cv_fold": 1}}, "state_dict": {}}, other)
    with pytest.raises(SystemExit, match="pretrained on another split than CV fold 0"):
        main(["--cv-fold", "0", "--data", str(small_br35h), "--pretrained", str(other)])
