"""``make model-card``: write ``docs/model_card.md`` from a run's ``metrics.json``.

    python -m lightning_app.training.model_card [--run runs/ensemble/version_N] [--out docs/model_card.md]

Everything with a number comes from the run (``metrics.json``, ``config.yaml``) and its data
folder (``validation.json``, the manifest, the misclassified images' headers): see
:mod:`lightning_app.training.card_sections`, one function per section. The hand-written
observations of the misclassified scans come from ``docs/model_card_observations.md`` when it
exists. No torch here: it runs in a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lightning_app.data import manifest
from lightning_app.training.card_sections import Sources, card

OBSERVATIONS = Path("docs/model_card_observations.md")


def newest_run(root: Path) -> Path:
    """The newest ``version_*`` under ``root`` that has a ``metrics.json``."""
    from lightning_app.training.runs import newest_run as newest

    run = newest(root, having="metrics.json")
    if run is None:
        raise FileNotFoundError(f"no run with metrics.json under {root}: run 'make fit' first")
    return run


def predict_misclassified(run: Path, metrics: dict[str, Any], data_dir: Path) -> list[dict[str, Any]]:
    """For a run whose metrics.json predates the list: run its checkpoint over the test split."""
    import torch

    from lightning_app.data.pixels import split_pixels
    from lightning_app.models.classifier import Classifier
    from lightning_app.transforms import EvalPreset

    checkpoint = Path(metrics["checkpoint"])
    if not checkpoint.is_file():  # a relative path written from another working directory
        checkpoint = run / "checkpoints" / checkpoint.name
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    prep = model.hparams["preprocessing"]
    pixels, targets = split_pixels(
        data_dir, "test", image_size=int(prep["image_size"]), head_crop=bool(prep.get("head_crop"))
    )
    with torch.inference_mode():
        inputs = EvalPreset(mean=prep["mean"], std=prep["std"])(pixels)
        probs = torch.cat([model.probabilities(model(batch)) for batch in inputs.split(64)])
    rows = manifest.split_rows(data_dir, "test")
    names = list(model.class_names)
    return [
        {
            "path": rows[i].path,
            "group": rows[i].group,
            "true": names[int(targets[i])],
            "predicted": names[int(probs[i].argmax())],
            "confidence": round(float(probs[i].max()), 4),
        }
        for i in torch.nonzero(probs.argmax(dim=1) != targets).flatten().tolist()
    ]


def render(
    run: Path,
    observations: Path | None = OBSERVATIONS,
    *,
    predict: bool = False,
    data_dir: Path | None = None,
    command: str = "python -m lightning_app.training.model_card",
) -> str:
    """The model card as Markdown; ``data_dir`` (default: the run's) feeds every data section."""
    src = Sources.read(run, data_dir)
    if predict and "misclassified" not in src.metrics:
        src.metrics["misclassified"] = predict_misclassified(run, src.metrics, src.data_dir)
    notes = (
        observations.read_text().strip() if observations and observations.is_file() else "(none written yet)"
    )
    return card(src, notes, command, OBSERVATIONS)


def main(argv: list[str] | None = None) -> int:
    """Write the model card; one-line error when there is no run."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.model_card", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--run", type=Path, help="run directory (default: newest under --runs)")
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/ensemble"), help="default: the served ensemble"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/model_card.md"))
    parser.add_argument(
        "--predict", action="store_true", help="list misclassified test images by running the checkpoint"
    )
    parser.add_argument("--data", type=Path, help="data folder (default: the run's data_dir)")
    args = parser.parse_args(argv)
    try:
        run = args.run or newest_run(args.runs)
        if not (run / "metrics.json").is_file():
            raise FileNotFoundError(f"no metrics.json in {run}: run 'make fit' first")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(
        ["python -m lightning_app.training.model_card", *(sys.argv[1:] if argv is None else argv)]
    )
    args.out.write_text(render(run, predict=args.predict, data_dir=args.data, command=command))
    print(f"model card: {args.out} (from {run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
