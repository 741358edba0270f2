"""Export step: fit the out-of-distribution guard and measure it (``make mar`` prints the rates).

The shipped backend's (fp32, ONNX or int8: the precision recorded in ``metadata["backend"]``,
never the environment's ``SERVE_PRECISION``) feature sources of the TRAIN split (the pooled
statistics of every stage where the backbone has stages, else the penultimate features) -> per source,
class means + Ledoit-Wolf shared covariance; each source's distances standardised on the
VALIDATION split, and the threshold keeps >= 99 % of the VALIDATION split in-distribution:
the smallest fraction of :data:`KEEPS` whose group-wise cross-validation on the validation
split (calibrate on four folds of whole near-duplicate groups, count the fifth's flags)
flags <= 1 %, so that scans of unseen groups are flagged at about the rate asked for;
the held-out TEST split and simple corruptions of it (heavy noise, inverted, rotated 90
degrees, a crop of the skull's edge) are only measured. Writes
:data:`~lightning_app.inference.artefacts.OOD_STATS` and records the rates under
``metadata["ood"]``. Small data sets (:func:`plan_fit`): a class with fewer than
:data:`MIN_PER_CLASS` training images, or a degenerate class-wise covariance, gives one pooled
(class-agnostic) mean (``"pooled": true`` and the reason); too few images to fit or to set a
threshold ships no guard (``"fitted": false`` and the reason). Each says so in one printed line.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from lightning_app.inference import colour
from lightning_app.inference.artefacts import OOD_MIN_PER_CLASS as MIN_PER_CLASS
from lightning_app.inference.artefacts import OOD_STATS
from lightning_app.inference.backends import load_backend, precision_of
from lightning_app.inference.eager import TorchBackend
from lightning_app.inference.forward import Backend
from lightning_app.inference.ood import KEEP, OODGuard
from lightning_app.transforms import EvalPreset, Preprocessing

if TYPE_CHECKING:
    from lightning_app.export.context import ExportContext


def noisy(pixels: torch.Tensor) -> torch.Tensor:
    """Heavy Gaussian noise (sigma = 80 of 255), seeded."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(pixels.shape, generator=generator) * 80.0
    return (pixels.float() + noise).clamp(0, 255).round().to(torch.uint8)


def inverted(pixels: torch.Tensor) -> torch.Tensor:
    """Negative image: bright background, dark skull."""
    return 255 - pixels


def rotated(pixels: torch.Tensor) -> torch.Tensor:
    """Rotated by 90 degrees."""
    return torch.rot90(pixels, 1, dims=(2, 3)).contiguous()


def skull_edge(pixels: torch.Tensor) -> torch.Tensor:
    """A third-of-the-image crop centred on the top edge of the head, resized back."""
    size = pixels.shape[-1]
    side = max(4, size // 3)
    out = []
    for image in pixels:
        rows = (image[0] > 30).any(dim=1).nonzero()
        cols = (image[0] > 30).any(dim=0).nonzero()
        top = int(rows[0]) if len(rows) else 0
        centre = (int(cols[0]) + int(cols[-1])) // 2 if len(cols) else size // 2
        y0 = min(max(0, top - side // 2), size - side)
        x0 = min(max(0, centre - side // 2), size - side)
        crop = image[None, :, y0 : y0 + side, x0 : x0 + side].float()
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(out).round().clamp(0, 255).to(torch.uint8)


#: name -> corruption of ``uint8 [N, 1, S, S]`` MRIs (out-of-distribution by construction).
CORRUPTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "noise": noisy,
    "inverted": inverted,
    "rotated_90": rotated,
    "skull_edge_crop": skull_edge,
}


def sources_of(
    backend: Backend, normalise: EvalPreset, pixels: torch.Tensor, batch: int = 64
) -> dict[str, np.ndarray]:
    """Every feature source (``Forward.sources()``) of ``uint8 [N, 1, S, S]``, in batches."""
    parts = [backend(normalise(pixels[i : i + batch])).sources() for i in range(0, len(pixels), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}


def flagged(guard: OODGuard, sources: dict[str, np.ndarray]) -> float:
    """Fraction of images whose score exceeds the threshold."""
    if not sources or not len(next(iter(sources.values()))):
        return float("nan")
    return float((guard.scores(sources) > guard.threshold).mean())


#: Candidate fractions of validation kept in-distribution, smallest first (every one >= KEEP).
KEEPS = (KEEP, 0.995, 0.998, 1.0)
#: What the group-wise cross-validation on validation may flag, at most, for a candidate to pass.
TARGET_FPR = 0.01
FOLDS = 5


def val_groups(data_dir: Path) -> list[str]:
    """The near-duplicate group of each validation scan, in ``ExportContext.pixels("val")`` order."""
    from lightning_app.data import manifest

    return [row.group for row in manifest.split_rows(Path(data_dir), "val")]


def group_cv_fpr(guard: OODGuard, val: dict[str, np.ndarray], groups: list[str], keep: float) -> float:
    """Validation scans flagged when each fold of whole groups is scored by a guard calibrated on the rest.

    An estimate, from validation alone, of the false-positive rate on scans of groups the
    calibration never saw (the test split's situation): standardisation and threshold are
    refitted without the fold, the train-fitted means and covariances are kept.
    """
    fold = np.array([zlib.crc32(g.encode()) % FOLDS for g in groups])
    flagged = 0
    for k in range(FOLDS):
        held = fold == k
        if not held.any() or held.all():
            continue
        calibrated = guard.calibrated({n: v[~held] for n, v in val.items()}, keep)
        flagged += int((calibrated.scores({n: v[held] for n, v in val.items()}) > calibrated.threshold).sum())
    return flagged / max(1, len(groups))


def choose_keep(
    guard: OODGuard, val: dict[str, np.ndarray], groups: list[str]
) -> tuple[float, dict[str, float]]:
    """The first of :data:`KEEPS` whose group-CV false-positive rate is <= :data:`TARGET_FPR`."""
    table: dict[str, float] = {}
    for keep in KEEPS:
        table[str(keep)] = round(group_cv_fpr(guard, val, groups, keep), 4)
        if table[str(keep)] <= TARGET_FPR:
            return keep, table
    return KEEPS[-1], table


#: Fewest training images for any fit, and fewest validation images to set a threshold on.
MIN_TRAIN = 10
MIN_VAL = 5


def plan_fit(train_labels: torch.Tensor, class_names: list[str], n_val: int) -> tuple[str, str]:
    """``("classwise" | "pooled" | "none", why)`` from the split sizes (why is empty for class-wise)."""
    counts = torch.bincount(train_labels, minlength=len(class_names)).tolist()
    if len(train_labels) < MIN_TRAIN or n_val < MIN_VAL:
        return "none", (
            f"{len(train_labels)} training and {n_val} validation images: too few "
            f"(needs >= {MIN_TRAIN} and >= {MIN_VAL})"
        )
    small = [f"{name} ({n})" for name, n in zip(class_names, counts, strict=True) if n < MIN_PER_CLASS]
    if small:
        return "pooled", (
            f"fewer than {MIN_PER_CLASS} training images in {', '.join(small)}: one class-agnostic mean"
        )
    return "classwise", ""


def fit_guard(sources: dict[str, np.ndarray], labels: torch.Tensor, num_classes: int) -> OODGuard | None:
    """The guard, or ``None`` when its covariance is degenerate (singular or not finite)."""
    try:
        guard = OODGuard.fit(sources, labels, num_classes)
    except (ValueError, RuntimeError):  # an empty class, or numpy's LinAlgError (singular)
        return None
    finite = all(bool(np.isfinite(p.precision).all() and np.isfinite(p.means).all()) for p in guard.parts)
    return guard if finite else None


def not_fitted(ctx: ExportContext, reason: str) -> None:
    """Ship without a guard, and say so in the metadata and in one printed line."""
    ctx.metadata["ood"] = {"fitted": False, "reason": reason}
    print(f"ood: not fitted ({reason}): predictions carry no in_distribution block")


def ood_summary(ood: dict[str, Any]) -> str:
    """One line on the shipped guard, from ``metadata["ood"]``."""
    if not ood.get("fitted", "threshold" in ood):
        return f"none ({ood.get('reason') or ood.get('skipped', 'not fitted')})"
    kind = f"pooled ({ood.get('reason')})" if ood.get("pooled") else "class-wise"
    colour = f"; {colour_summary(ood['colour'])}" if "colour" in ood else ""
    return f"{ood.get('method', 'mahalanobis')}, {kind}, threshold {float(ood['threshold']):.3f}{colour}"


def colour_check(data_dir: Path, preprocessing: Preprocessing) -> dict[str, Any]:
    """:func:`colour.validate_limit` on the validation and test files of ``data_dir``."""
    from lightning_app.data import manifest

    val, test = (
        [Path(data_dir) / r.path for r in manifest.split_rows(Path(data_dir), s)] for s in ("val", "test")
    )
    return colour.validate_limit(val, test, preprocessing)


def colour_summary(checked: dict[str, Any]) -> str:
    """One line on the colour check, from ``metadata["ood"]["colour"]``."""
    if checked["limit"] is None:
        return f"colour check off: {checked['reason']}"
    rates = ", ".join(
        f"{s} {checked[f'{s}_flagged']:.1%}" for s in ("val", "test") if checked[f"{s}_flagged"] is not None
    )
    return f"colour check: mean chroma > {checked['limit']:g} grey levels is flagged (flagged {rates})"


def fit_ood(ctx: ExportContext) -> None:
    """The export step: fit on train, threshold on validation, measure on test and corruptions.

    On a small data set the guard is pooled (one class-agnostic mean) or not shipped, and
    ``metadata["ood"]`` says which and why (:func:`plan_fit`).
    """
    if ctx.data_dir is None:
        reason = "no training data given (--data): predictions carry no OOD block"
        ctx.metadata["ood"] = {"skipped": reason, "fitted": False, "reason": reason}
        print("ood: skipped (no training data: pass --data <prepared root>)")
        return
    # The shipped backend's own features: the precision precision_step recorded in
    # metadata["backend"] (its int8/ONNX artefact, if any), never a server's SERVE_PRECISION.
    # The statistics and threshold must describe what serving computes.
    shipped = precision_of(ctx.metadata)
    backend: Backend = load_backend(ctx.out_dir, ctx.metadata, precision=shipped) or TorchBackend(
        copy.deepcopy(ctx.net), str(ctx.metadata["backbone"])
    )
    pre = ctx.metadata["preprocessing"]
    normalise = EvalPreset(mean=float(pre["mean"]), std=float(pre["std"]))
    train, train_labels = ctx.pixels("train")
    val, _ = ctx.pixels("val")
    test, _ = ctx.pixels("test")
    count = int(ctx.metadata["num_classes"])
    names = [str(n) for n in ctx.metadata.get("class_names") or range(count)]
    plan, why = plan_fit(train_labels, names, len(val))
    if plan == "none":
        return not_fitted(ctx, why)
    val_sources = sources_of(backend, normalise, val)
    train_sources = sources_of(backend, normalise, train)
    fitted = fit_guard(train_sources, train_labels, count) if plan == "classwise" else None
    if fitted is None:
        if plan == "classwise":
            plan, why = "pooled", "degenerate class-wise covariance: one class-agnostic mean"
        fitted = fit_guard(train_sources, torch.zeros_like(train_labels), 1)
    if fitted is None:
        return not_fitted(ctx, f"degenerate covariance of {len(train)} training images")
    keep, cv = choose_keep(fitted, val_sources, val_groups(ctx.data_dir))
    guard = fitted.calibrated(val_sources, keep)
    if not math.isfinite(guard.threshold):
        return not_fitted(ctx, f"no finite threshold on {len(val)} validation images")
    ctx.files.append(guard.save(ctx.out_dir / OOD_STATS))
    rates: dict[str, Any] = {
        "val_flagged": flagged(guard, val_sources),
        "test_flagged": flagged(guard, sources_of(backend, normalise, test)),
    }
    for name, corrupt in CORRUPTIONS.items():
        rates[f"test_{name}_flagged"] = flagged(guard, sources_of(backend, normalise, corrupt(test)))
    ctx.metadata["ood"] = {
        "fitted": True,
        "pooled": plan == "pooled",
        **({"reason": why} if why else {}),
        "method": "mahalanobis-ensemble" if len(guard.parts) > 1 else "mahalanobis",
        "sources": [part.source for part in guard.parts],
        "combine": guard.combine,
        "backend": backend.name,
        "threshold": guard.threshold,
        "shrinkage": guard.shrinkage,
        "keep": keep,
        "keep_group_cv_fpr": cv,
        "n": {"train": len(train), "val": len(val), "test": len(test)},
        **{k: round(v, 4) for k, v in rates.items()},
        "colour": colour_check(ctx.data_dir, Preprocessing(**pre)),
    }
    shrinkage = guard.shrinkage
    if plan == "pooled":
        print(f"ood: pooled fit ({why})")
    print(
        f"ood: Mahalanobis threshold {guard.threshold:.3f} on {backend.name} features "
        f"({', '.join(p.source for p in guard.parts)}; {guard.combine} of standardised parts; "
        f"shrinkage {shrinkage:.3f})"
    )
    tried = ", ".join(f"{k}: {v:.1%}" for k, v in cv.items())
    print(f"ood: threshold keeps {keep:.1%} of val (group-wise {FOLDS}-fold CV on val, flagged: {tried})")
    val_rate, test_rate = rates["val_flagged"], rates["test_flagged"]
    print(f"ood: flagged val {val_rate:.1%} (n={len(val)}), held-out test {test_rate:.1%} (n={len(test)})")
    corrupted = ", ".join(f"{name} {rates[f'test_{name}_flagged']:.1%}" for name in CORRUPTIONS)
    print(f"ood: flagged corrupted test scans: {corrupted}")
    print(f"ood: {colour_summary(ctx.metadata['ood']['colour'])}")
