"""Where the out-of-fold errors are: the groups every run gets wrong, and those only some do.

Several CV runs of the same folds (training seeds, or recipes) each answer every held-out
image once. An image that one run gets wrong and the others right is the seed's noise, which
an ensemble averages away; an image that every run gets wrong is the limit of the recipe (or
of its label), which no ensemble of that recipe fixes. This pools each run's out-of-fold
predictions, counts per image how many runs got it wrong, and per near-duplicate group the
share of its (image, run) answers that are wrong and the mean probability given to its label.

``python -m lightning_app.training.errors runs/cv/default runs/cv/seed7 runs/cv/seed11 --top 20``

``--also runs/cv/other`` (repeatable) asks whether another run (a new recipe, or one more seed
as the reference) gets right what every listed run gets wrong: its errors on those scans
against its errors overall. A recipe that fixes the listed runs' blind spots scores well
under another seed of them there.

``--cues --data data/br35h`` compares, per label, the groups wrong in at least half their
answers with those never wrong on two label-free cues (one scan per group, at 128 px): its
mean grey level and the share of it filled (grey > 20). ``--sheet errors.png`` also draws one
image of each listed group, captioned with its label, for a person to read: a consistent
error is a blind spot of the models or a wrong label, and only a reader of the scan can tell
which. Nothing is chosen from this.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from lightning_app.data import cues
from lightning_app.data.atomic import write_atomic
from lightning_app.training import predictions as pred
from lightning_app.training.ensemble import average, pooled_runs
from lightning_app.transforms import ImageDecodeError, load

CONSISTENT = 0.5  # a group wrong in at least this share of its (image, run) answers
TILE = 160


@dataclass(frozen=True)
class GroupErrors:
    """One near-duplicate group's answers over every run."""

    group: str
    label: str
    images: int
    wrong: int  # (image, run) answers that are wrong
    answers: int  # images x runs
    p_label: float  # mean probability the runs gave the group's label
    example: str  # the group's first image, relative to the data root

    @property
    def share(self) -> float:
        """The share of the group's answers that are wrong."""
        return self.wrong / self.answers


def wrong_of(predictions: pred.Predictions) -> torch.Tensor:
    """Per image, whether the argmax answer misses the label."""
    return predictions.probs.argmax(1) != predictions.targets


def analyse(runs: Sequence[pred.Predictions]) -> dict[str, Any]:
    """Per image and per group, how many of ``runs`` (pooled out of fold) got it wrong."""
    wrong = torch.stack([wrong_of(r) for r in runs]).sum(0)
    first = runs[0]
    label_p = torch.stack([r.probs[torch.arange(len(r)), r.targets] for r in runs]).mean(0)
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(first.groups):
        members[group].append(i)
    groups = [
        GroupErrors(
            group=g,
            label=first.class_names[int(first.targets[idx[0]])],
            images=len(idx),
            wrong=int(wrong[idx].sum()),
            answers=len(idx) * len(runs),
            p_label=float(label_p[idx].mean()),
            example=first.paths[idx[0]],
        )
        for g, idx in members.items()
    ]
    groups.sort(key=lambda e: (-e.wrong, -e.share, e.group))
    ens = average(list(runs)) if len(runs) > 1 else first
    consistent = [e for e in groups if e.share >= CONSISTENT]
    total = int(wrong.sum())
    return {
        "runs": len(runs),
        "images": len(first),
        "groups": len(groups),
        "wrong_in_k_runs": [int((wrong == k).sum()) for k in range(len(runs) + 1)],
        "errors": total,
        "ensemble_wrong": int(wrong_of(ens).sum()),
        "groups_with_an_error": sum(1 for e in groups if e.wrong),
        "consistent_groups": len(consistent),
        "consistent_images": sum(e.images for e in consistent),
        "consistent_by_label": dict(sorted(Counter(e.label for e in consistent).items())),
        "consistent_share_of_errors": sum(e.wrong for e in consistent) / total if total else 0.0,
        "by_group": groups,
    }


def recheck(runs: Sequence[pred.Predictions], others: Sequence[pred.Predictions]) -> list[dict[str, int]]:
    """Per run of ``others``: its errors on the images every one of ``runs`` gets wrong, and overall."""
    shared = torch.stack([wrong_of(r) for r in runs]).all(0)
    rows = []
    for other in others:
        wrong = wrong_of(other)
        rows.append(
            {
                "shared": int(shared.sum()),
                "wrong_there": int((wrong & shared).sum()),
                "wrong": int(wrong.sum()),
            }
        )
    return rows


def listed(result: dict[str, Any], top: int) -> list[GroupErrors]:
    """The first ``top`` groups by wrong answers, those with at least one."""
    return [e for e in result["by_group"][:top] if e.wrong]


def report(result: dict[str, Any], top: int) -> str:
    """The summary lines and a markdown table of the ``top`` groups by wrong answers."""
    runs, counts = result["runs"], result["wrong_in_k_runs"]
    lines = [
        f"{result['images']} out-of-fold images in {result['groups']} groups, {runs} runs: "
        + ", ".join(f"{n} wrong in {k} of {runs}" for k, n in enumerate(counts) if k),
        f"(image, run) errors: {result['errors']}, in {result['groups_with_an_error']} groups; "
        f"the runs' averaged probabilities get {result['ensemble_wrong']} images wrong.",
        f"Groups wrong in >= {CONSISTENT:.0%} of their answers: {result['consistent_groups']} "
        f"({result['consistent_images']} images; "
        + ", ".join(f"{n} {label}" for label, n in result["consistent_by_label"].items())
        + f"), holding {result['consistent_share_of_errors']:.0%} of all errors.",
        "",
        "| group | label | images | wrong answers | mean p(label) | example |",
        "|---|---|---|---|---|---|",
    ]
    for e in listed(result, top):
        lines.append(
            f"| {e.group} | {e.label} | {e.images} | {e.wrong}/{e.answers} ({e.share:.0%}) "
            f"| {e.p_label:.2f} | {e.example} |"
        )
    return "\n".join(lines)


def scan(path: Path, size: int) -> Image.Image:
    """The file as the model reads it (:func:`~lightning_app.transforms.load`) at ``size`` px.

    A file that is no image is a ``ValueError`` naming it.
    """
    try:
        return Image.fromarray(load(path, image_size=size)[0])
    except ImageDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def cue_table(groups: Sequence[GroupErrors], data_root: Path, size: int = 128) -> str:
    """Per label, the median cues of the groups wrong in >= :data:`CONSISTENT` and of those never wrong."""
    lines = [
        "| label | groups | count | " + " | ".join(f"{name} (median)" for name in cues.NAMES) + " |",
        "|---|---|---" + "|---" * len(cues.NAMES) + "|",
    ]
    for label in sorted({e.label for e in groups}):
        ours = [e for e in groups if e.label == label]
        kinds = {
            f"wrong in >= {CONSISTENT:.0%}": [e for e in ours if e.share >= CONSISTENT],
            "never wrong": [e for e in ours if not e.wrong],
        }
        for kind, chosen in kinds.items():
            if not chosen:
                continue
            values = cues.of(np.stack([np.asarray(scan(data_root / e.example, size)) for e in chosen]))
            lines.append(f"| {label} | {kind} | {len(chosen)} | " + " | ".join(cues.medians(values)) + " |")
    return "\n".join(lines)


def sheet(groups: Sequence[GroupErrors], data_root: Path, out: Path, cols: int = 8) -> None:
    """One captioned tile per group (its first image), written atomically as a PNG."""
    if not groups:
        raise ValueError("no group to draw")
    rows = -(-len(groups) // cols)
    canvas = Image.new("L", (TILE * min(cols, len(groups)), TILE * rows))
    for k, e in enumerate(groups):
        tile = scan(data_root / e.example, TILE)
        draw = ImageDraw.Draw(tile)
        draw.text((3, 2), f"{e.label} x{e.images}", fill=255)
        draw.text((3, TILE - 12), f"wrong {e.share:.0%} p {e.p_label:.2f}", fill=255)
        canvas.paste(tile, ((k % cols) * TILE, (k // cols) * TILE))
    write_atomic(out, lambda tmp: canvas.save(tmp, format="PNG"))


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lightning_app.training.errors RUN... [--top N] [--sheet PNG --data ROOT]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=20, help="groups listed (most wrong answers first)")
    parser.add_argument("--sheet", type=Path, help="draw the listed groups' images into this PNG")
    parser.add_argument("--also", type=Path, action="append", default=[], help="a run rechecked (repeatable)")
    parser.add_argument("--cues", action="store_true", help="grey level and fill: wrong against right groups")
    parser.add_argument("--data", type=Path, default=Path("data/br35h"), help="the images' root")
    args = parser.parse_args(argv)
    try:
        pooled = pooled_runs([*args.cv_dirs, *args.also])
        main_runs, others = pooled[: len(args.cv_dirs)], pooled[len(args.cv_dirs) :]
        result = analyse(main_runs)
        print(report(result, args.top))
        for path, row in zip(args.also, recheck(main_runs, others), strict=True):
            print(
                f"{path}: wrong on {row['wrong_there']} of the {row['shared']} images every listed run "
                f"gets wrong ({row['wrong_there'] / max(row['shared'], 1):.0%}); {row['wrong']} wrong overall"
            )
        if args.cues:
            print("\n" + cue_table(result["by_group"], args.data))
        if args.sheet:
            sheet(listed(result, args.top), args.data, args.sheet)
            print(f"sheet: {args.sheet}")
    except (OSError, ValueError) as exc:
        sys.exit(f"errors: {exc}")


if __name__ == "__main__":
    main()
