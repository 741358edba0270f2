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
``metadata["ood"]``.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from lightning_app.inference.artefacts import OOD_STATS
from lightning_app.inference.backends import load_backend, precision_of
from lightning_app.inference.engine import TorchBackend
from lightning_app.inference.forward import Backend
from lightning_app.inference.ood import KEEP, OODGuard
from lightning_app.transforms import EvalPreset

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
) -> dict[str, torch.Tensor]:
    """Every feature source (``Forward.sources()``) of ``uint8 [N, 1, S, S]``, in batches."""
    parts = [backend(normalise(pixels[i : i + batch])).sources() for i in range(0, len(pixels), batch)]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]} if parts else {}


def flagged(guard: OODGuard, sources: dict[str, torch.Tensor]) -> float:
    """Fraction of images whose score exceeds the threshold."""
    if not sources or not len(next(iter(sources.values()))):
        return float("nan")
    return float((guard.scores(sources) > guard.threshold).double().mean())


#: Candidate fractions of validation kept in-distribution, smallest first (every one >= KEEP).
KEEPS = (KEEP, 0.995, 0.998, 1.0)
#: What the group-wise cross-validation on validation may flag, at most, for a candidate to pass.
TARGET_FPR = 0.01
FOLDS = 5


def val_groups(data_dir: Path) -> list[str]:
    """The near-duplicate group of each validation scan, in ``ExportContext.pixels("val")`` order."""
    from lightning_app.data import manifest

    return [row.group for row in manifest.split_rows(Path(data_dir), "val")]


def group_cv_fpr(guard: OODGuard, val: dict[str, torch.Tensor], groups: list[str], keep: float) -> float:
    """Validation scans flagged when each fold of whole groups is scored by a guard calibrated on the rest.

    An estimate, from validation alone, of the false-positive rate on scans of groups the
    calibration never saw (the test split's situation): standardisation and threshold are
    refitted without the fold, the train-fitted means and covariances are kept.
    """
    fold = torch.tensor([zlib.crc32(g.encode()) % FOLDS for g in groups])
    flagged = 0
    for k in range(FOLDS):
        held = fold == k
        if not held.any() or held.all():
            continue
        calibrated = guard.calibrated({n: v[~held] for n, v in val.items()}, keep)
        flagged += int((calibrated.scores({n: v[held] for n, v in val.items()}) > calibrated.threshold).sum())
    return flagged / max(1, len(groups))


def choose_keep(
    guard: OODGuard, val: dict[str, torch.Tensor], groups: list[str]
) -> tuple[float, dict[str, float]]:
    """The first of :data:`KEEPS` whose group-CV false-positive rate is <= :data:`TARGET_FPR`."""
    table: dict[str, float] = {}
    for keep in KEEPS:
        table[str(keep)] = round(group_cv_fpr(guard, val, groups, keep), 4)
        if table[str(keep)] <= TARGET_FPR:
            return keep, table
    return KEEPS[-1], table


def fit_ood(ctx: ExportContext) -> None:
    """The export step: fit on train, threshold on validation, measure on test and corruptions."""
    if ctx.data_dir is None:
        ctx.metadata["ood"] = {"skipped": "no training data given (--data): predictions carry no OOD block"}
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
    val_sources = sources_of(backend, normalise, val)
    fitted = OODGuard.fit(
        sources_of(backend, normalise, train), train_labels, int(ctx.metadata["num_classes"])
    )
    keep, cv = choose_keep(fitted, val_sources, val_groups(ctx.data_dir))
    guard = fitted.calibrated(val_sources, keep)
    ctx.files.append(guard.save(ctx.out_dir / OOD_STATS))
    rates: dict[str, Any] = {
        "val_flagged": flagged(guard, val_sources),
        "test_flagged": flagged(guard, sources_of(backend, normalise, test)),
    }
    for name, corrupt in CORRUPTIONS.items():
        rates[f"test_{name}_flagged"] = flagged(guard, sources_of(backend, normalise, corrupt(test)))
    ctx.metadata["ood"] = {
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
    }
    shrinkage = guard.shrinkage
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
