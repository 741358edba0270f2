"""``make model-card``: the card is written from a real run's metrics.json."""

from __future__ import annotations

import json
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
