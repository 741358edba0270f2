"""``make model-card``: the card is written from a real run's metrics.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lightning_app.training import model_card


@pytest.mark.slow
def test_model_card_states_intended_use_metrics_with_cis_and_failures(
    trained_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "card.md"
    assert model_card.main(["--run", str(trained_run), "--out", str(out)]) == 0
    card = out.read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert "not a diagnostic device" in card
    assert "Br35H" in card and "Licence" in card and "near-copy of a test image" in card
    accuracy = metrics["confidence_intervals"]["accuracy"]
    assert f"{accuracy['value'] * 100:.1f} % (95 % CI {accuracy['low'] * 100:.1f} to" in card
    assert f"T = {metrics['calibration']['temperature']:.4f}" in card
    (_, fp), (fn, _) = metrics["confusion_matrix"]
    assert len(metrics["misclassified"]) == fp + fn
    if fp + fn:
        assert f"{fp + fn} of " in card and metrics["misclassified"][0]["path"] in card
    assert str(metrics["git_commit"])[:12] in card
    point = metrics["operating_point"]  # the screening operating point, beside the argmax figures
    flat = " ".join(card.split("\n"))
    assert f"≥ {point['threshold']:.4f}, a threshold chosen on validation for sensitivity" in flat
    assert f"sensitivity {point['test']['sensitivity']['value'] * 100:.1f} %" in card


def test_model_card_without_a_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert model_card.main(["--runs", str(tmp_path), "--out", str(tmp_path / "card.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run with metrics.json") and "Traceback" not in err
    assert not (tmp_path / "card.md").exists()


@pytest.mark.slow
def test_predict_recovers_the_misclassified_list_of_an_older_run(trained_run: Path, tmp_path: Path) -> None:
    old = tmp_path / "old_run"
    old.mkdir()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    recorded = metrics.pop("misclassified")
    (old / "metrics.json").write_text(json.dumps(metrics))
    (old / "config.yaml").write_bytes((trained_run / "config.yaml").read_bytes())
    card = model_card.render(old, predict=True)
    if recorded:
        assert recorded[0]["path"] in card
    assert f"{len(recorded)} of " in card or "No test image was misclassified" in card
    assert "predates" in model_card.render(old, predict=False)


def _data_folder(root: Path, per_label: dict[str, int], groups: int) -> Path:
    """A prepared-looking data folder: a manifest and a validation report, no images needed."""
    from lightning_app.data import manifest

    root.mkdir()
    rows = [
        manifest.Row(f"{label}/{i}.jpg", label, manifest.SPLITS[i % 3], f"s{label}{i}", f"g{i % groups}")
        for label, n in per_label.items()
        for i in range(n)
    ]
    manifest.write(rows, manifest.path_of(root))
    counts = {s: dict(Counter(r.label for r in manifest.rows_of(rows, s))) for s in manifest.SPLITS}
    report = {
        "counts": counts,
        "formats": {"PNG": len(rows)},
        "near_duplicates": {"groups": {"train": groups, "val": 0, "test": 0}, "images": {"train": len(rows)}},
    }
    (root / "validation.json").write_text(json.dumps(report))
    return root


def _run(tmp_path: Path, data_dir: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    metrics = {"class_names": ["no_tumor", "tumor"], "data_dir": str(data_dir), "misclassified": []}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_data_sections_read_the_given_folder_not_hard_coded_numbers(tmp_path: Path) -> None:
    trained_on = _data_folder(tmp_path / "a", {"no": 4, "yes": 5}, groups=3)
    other = _data_folder(tmp_path / "b", {"no": 7, "yes": 11}, groups=6)
    run = _run(tmp_path, trained_on)
    default = model_card.render(run, observations=None)
    assert "trained on 9 web-collected PNG slices" in default and "4 no_tumor + 5 tumor" in default
    assert "3 groups" in default and "1,500" not in default and "2,999" not in default
    given = model_card.render(run, observations=None, data_dir=other)  # --data reaches every section
    assert "trained on 18 web-collected" in given and "7 no_tumor + 11 tumor" in given
    assert "6 groups" in given and "4 no_tumor" not in given
    assert given.endswith("answer.\n") and "\n\n## Data\n\n" in given
