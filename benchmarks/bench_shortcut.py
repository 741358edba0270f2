"""``make bench-shortcut``: how much of a model's answer comes from outside the head?

Br35H's tumour scans more often carry a white frame, corner letters or a ruler than its
normal scans: a model can learn those in place of the brain. This benchmark answers every
scan three times with the serving code (eager fp32): as it is, with everything outside the
head (:func:`lightning_app.data.headmask.head_mask`, dilated 2 px) blacked out, and with it
replaced by a fixed-seed random grey with noise (:class:`lightning_app.data.augment.BackgroundSwap`).
A model that reads the head answers the same; the share of answers that change, and the
recall lost per class, is what it owed to the background. Images whose mask is not a head
are left as they are (the same rule as the augmentation).

``--probe framing`` asks the same of two other cues that separate Br35H's classes without
reading the brain (its tumour scans fill more of the frame and are brighter): every scan is
also answered zoomed out and in by 10 % about its centre (black border; the training
augmentation's own scale range) and 10 % darker and brighter. A model that reads the tumour
gives the same answers; one that reads the framing calls fewer tumours when the head shrinks.

The scans are the test split, or with ``--cv-fold K`` the out-of-fold scans of CV fold K
(each ``--ckpt`` must then be that fold's): choosing a recipe never reads the test split.

    uv run python -m benchmarks.bench_shortcut --ckpt runs/.../best-*.ckpt [--ckpt ...] [--cv-fold K]

Results: stdout, reports/bench_shortcut.json and the ``bench-shortcut`` markers of
docs/benchmarks.md unless ``--no-doc``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvf

from benchmarks.bench_localise import scans_of
from benchmarks.docsection import publish
from lightning_app.data import cues
from lightning_app.data.augment import BackgroundSwap
from lightning_app.export.build import export
from lightning_app.inference.engine import InferenceEngine

REPO = Path(__file__).resolve().parents[1]
BATCH = 64


def zoom(scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The scan scaled by ``scale`` about its centre, a black border where it shrinks."""
    return lambda t: tvf.affine(t, angle=0.0, translate=[0, 0], scale=scale, shear=[0.0, 0.0], fill=0)


def gain(factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Every grey level times ``factor``, clipped to 0-255."""
    return lambda t: (t.float() * factor).round().clamp(0, 255).to(torch.uint8)


#: per probe, the variants tried: name -> the change applied to every scan (None: as it is)
PROBES: dict[str, dict[str, Callable[[torch.Tensor], torch.Tensor] | None]] = {
    "background": {
        "as is": None,
        "black": BackgroundSwap(1.0, level=0.0, noise=0.0),
        "grey + noise": BackgroundSwap(1.0),
    },
    "framing": {
        "as is": None,
        "zoomed out 10 %": zoom(0.9),
        "zoomed in 10 %": zoom(1.1),
        "10 % darker": gain(0.9),
        "10 % brighter": gain(1.1),
    },
}


def labels_of(engine: InferenceEngine, pixels: np.ndarray) -> np.ndarray:
    """The engine's argmax class index of every scan (batches of :data:`BATCH`)."""
    out = [
        engine.probabilities(engine.forward(pixels[i : i + BATCH]).logits).argmax(axis=1)
        for i in range(0, len(pixels), BATCH)
    ]
    return np.concatenate(out)


def shortcut(
    engine: InferenceEngine, pixels: np.ndarray, truth: np.ndarray, seed: int = 0, probe: str = "background"
) -> list[dict[str, Any]]:
    """Accuracy, recall per class and answers changed against "as is", per variant of ``probe``."""
    torch.manual_seed(seed)
    results, plain = [], None
    for name, swap in PROBES[probe].items():
        varied = pixels if swap is None else np.stack([swap(torch.from_numpy(p)).numpy() for p in pixels])
        predicted = labels_of(engine, varied)
        plain = predicted if plain is None else plain
        recall = {c: float((predicted[truth == i] == i).mean()) for i, c in enumerate(engine.class_names)}
        results.append({
            "variant": name, "accuracy": float((predicted == truth).mean()), "recall": recall,
            "changed": int((predicted != plain).sum()), "scans": len(truth),
        })  # fmt: skip
    return results


def table(rows: list[dict[str, Any]], command: str, scans: str, probe: str = "background") -> str:
    """The markdown section: one row per checkpoint and variant of ``probe``."""
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch {torch.__version__}"
    classes = list(rows[0]["recall"])
    return "\n".join([
        f"`{command}` — {when}; {rows[0]['scans']} scans of {scans}; eager fp32 (the serving code), argmax.",
        "",
        f"| checkpoint | {probe} | accuracy % | " + " | ".join(f"recall {c} %" for c in classes)
        + " | answers changed |",
        "|---|---|---|" + "---|" * len(classes) + "---|",
        *(
            f"| {r['name']} | {r['variant']} | {100 * r['accuracy']:.1f} | "
            + " | ".join(f"{100 * r['recall'][c]:.1f}" for c in classes)
            + f" | {r['changed']}/{r['scans']} ({r['changed'] / r['scans']:.1%}) |"
            for r in rows
        ),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Answer the chosen scans with each ``--ckpt`` and each background; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--name", action="append", help="a name per --ckpt (default: its run folder)")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "br35h")
    parser.add_argument("--cv-fold", type=int, help="this CV fold's out-of-fold scans, not the test split")
    parser.add_argument("--cv-folds", type=int, default=5, help="k of the CV split (with --cv-fold)")
    parser.add_argument("--probe", choices=sorted(PROBES), default="background", help="what is varied")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    names = args.name or [str(c.parents[1]) for c in args.ckpt]  # the run folder
    rows, which = scans_of(args.data, None, args.cv_folds, args.cv_fold)
    folders = sorted({r.label for r in rows})  # class index = sorted folder name, as trained
    truth = np.array([folders.index(r.label) for r in rows])
    results: list[dict[str, Any]] = []
    cue: dict[str, float] = {}
    positive = truth == truth.max()  # the cues' AUROC: the last class against the rest
    shown: list[str] = folders  # the class names the models answer with
    for ckpt, name in zip(args.ckpt, names, strict=True):
        with tempfile.TemporaryDirectory(prefix="bench-shortcut-") as tmp:
            export(ckpt, Path(tmp), steps=[])  # eager fp32: the network's own weights
            engine = InferenceEngine(Path(tmp))
            shown = engine.class_names
            pixels = np.stack([engine.decode((args.data / r.path).read_bytes()) for r in rows])
            cue = cue or {k: cues.auroc(v, positive) for k, v in cues.of(pixels).items()}
            for result in shortcut(engine, pixels, truth, probe=args.probe):
                results.append({"name": name, "checkpoint": str(ckpt), **result})
                print(results[-1], flush=True)
    command = "python -m benchmarks.bench_shortcut " + " ".join(f"--ckpt {c}" for c in args.ckpt)
    command += f" --cv-fold {args.cv_fold}" if args.cv_fold is not None else ""
    command += f" --probe {args.probe}" if args.probe != "background" else ""
    text = table(results, command, which, args.probe)
    if args.probe == "framing":
        text += f"\n\nAUROC of one number per scan alone, {shown[-1]} against the rest: " + ", ".join(
            f"{k} {v:.3f}" for k, v in cue.items()
        )
    section = "bench-shortcut" + ("" if args.probe == "background" else f"-{args.probe}")
    publish(section, {"rows": results, "probe": args.probe, "cue_auroc": cue}, text, doc=not args.no_doc)


if __name__ == "__main__":  # pragma: no cover
    main()
