"""Prepare and validate an image-folder root: checks, deduplicated split, JSON report.

``prepare`` inspects every file, drops unusable ones (listed by path, never silently),
deduplicates, writes ``split.csv`` and ``validation.json`` next to the images.
``validate`` re-checks an existing manifest against the files. Both fail when a split
is empty, a class is missing from a split, or a duplicate or near-duplicate (perceptual hash,
see :mod:`lightning_app.data.neardup`) spans two splits -- naming the files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from lightning_app.data import leaks, manifest, neardup
from lightning_app.data.atomic import write_text
from lightning_app.data.sources import IMAGE_SUFFIXES, DataError, discover
from lightning_app.transforms import ImageDecodeError, decode

REPORT_NAME = "validation.json"


@dataclass
class FileCheck:
    """What inspecting one file found."""

    path: str
    reason: str | None = None
    format: str | None = None
    mode: str | None = None
    size: tuple[int, int] | None = None
    sha256: str = ""
    pixels: str = ""
    phash: int | None = None
    phash_mirror: int | None = None


@dataclass
class Report:
    """Outcome of preparing or validating one root."""

    root: str
    counts: dict[str, dict[str, int]]
    rejected: list[dict[str, str]] = field(default_factory=list)
    duplicates_dropped: list[dict[str, str]] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    near_duplicates: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the data is fit for training."""
        return not self.problems

    def table(self) -> str:
        """A plain-text table of images per class and split, then groups and leaks per split."""
        classes = sorted({c for per in self.counts.values() for c in per})
        width = max([7, *map(len, classes)])
        lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in (*manifest.SPLITS, "total"))]
        for c in classes:
            n = [self.counts.get(s, {}).get(c, 0) for s in manifest.SPLITS]
            lines.append(f"{c:<{width}}  " + "  ".join(f"{v:>6}" for v in (*n, sum(n))))
        totals = [sum(self.counts.get(s, {}).values()) for s in manifest.SPLITS]
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{v:>6}" for v in (*totals, sum(totals))))
        for key in ("groups", "leaks"):
            per = self.near_duplicates.get(key)
            if per:
                n = [per.get(s, 0) for s in manifest.SPLITS]
                lines.append(f"{key:<{width}}  " + "  ".join(f"{v:>6}" for v in (*n, sum(n))))
        if self.near_duplicates:
            lines.append(
                f"(groups: near-duplicate groups, pHash Hamming <= {self.near_duplicates['threshold']} "
                f"or mirrored <= {self.near_duplicates['mirror_threshold']}; "
                "leaks: images with a near-duplicate in another split)"
            )
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        """Write the report as JSON (atomically)."""
        write_text(path, json.dumps({"ok": self.ok, **asdict(self)}, indent=2) + "\n")


def inspect_file(root: Path, rel: str, *, min_size: int) -> FileCheck:
    """Decode one file with the serving decoder and record what it is."""
    check = FileCheck(rel)
    path = root / rel
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        check.reason = f"unsupported file type: {path.suffix or '(no suffix)'}"
        return check
    data = path.read_bytes()
    check.sha256 = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as header:
            check.format, check.mode, check.size = header.format, header.mode, header.size
        gray = decode(data)
    except (ImageDecodeError, OSError) as exc:
        check.reason = str(exc)
        return check
    if min(gray.size) < min_size:
        check.reason = f"too small: {gray.size[0]}x{gray.size[1]} < {min_size} px"
        return check
    check.pixels = hashlib.sha256(gray.tobytes() + repr(gray.size).encode()).hexdigest()
    check.phash, check.phash_mirror = neardup.phashes(gray)
    return check


def inspect_all(root: Path, paths: list[str], *, min_size: int) -> list[FileCheck]:
    """Inspect many files on two threads (PIL decodes outside the GIL)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda p: inspect_file(root, p, min_size=min_size), paths))


def _report(root: Path, rows: list[manifest.Row], checks: list[FileCheck], threshold: int) -> Report:
    counts: dict[str, dict[str, int]] = {s: {} for s in manifest.SPLITS}
    for row in rows:
        counts[row.split][row.label] = counts[row.split].get(row.label, 0) + 1
    report = Report(
        root=str(root),
        counts=counts,
        rejected=[{"path": c.path, "reason": c.reason} for c in checks if c.reason],
        modes=dict(Counter(c.mode for c in checks if c.mode)),
        formats=dict(Counter(c.format for c in checks if c.format)),
    )
    classes = sorted({r.label for r in rows})
    if len(classes) < 2:
        report.problems.append(
            f"{len(classes)} class with usable images ({', '.join(classes) or 'none'}): "
            "a classifier needs at least two class folders"
        )
    total = Counter(r.label for r in rows)
    for split in manifest.SPLITS:
        if not counts[split]:
            report.problems.append(f"split '{split}' is empty")
            continue
        missing = [f"{c} ({total[c]} usable image(s) in all)" for c in classes if c not in counts[split]]
        if missing:
            report.problems.append(
                f"split '{split}' has no images of class {', '.join(missing)}: "
                "every class needs images in train, val and test (add images of it)"
            )
    by_check = {c.path: c for c in checks}
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        check = by_check.get(row.path)
        for key in (row.sha256, check.pixels if check else ""):
            if key:
                seen[key].add(row.split)
    spanning = sum(1 for splits in seen.values() if len(splits) > 1)
    if spanning:
        report.problems.append(f"{spanning} duplicate image(s) appear in more than one split")
    phashes = {
        c.path: (c.phash, c.phash_mirror)
        for c in checks
        if c.phash is not None and c.phash_mirror is not None
    }
    found = leaks.check(rows, phashes, threshold)
    report.near_duplicates = {
        "threshold": found.threshold,
        "mirror_threshold": found.mirror_threshold,
        "images": found.images,
        "groups": found.groups,
        "leaks": found.leaks,
        "cross_split_pairs": found.pairs,
    }
    report.problems += found.problems()
    return report


def _previous(root: Path) -> dict[str, manifest.Row] | None:
    path = manifest.path_of(root)
    if not path.is_file():
        return None
    try:
        return {row.path: row for row in manifest.read(path)}
    except manifest.OldManifestError:
        return None


def prepare(
    root: Path,
    *,
    seed: int = 42,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    min_size: int = 32,
    threshold: int = neardup.THRESHOLD,
    keep_existing: bool = False,
) -> Report:
    """Inspect, deduplicate, group and split ``root``; write ``split.csv`` and the report.

    With ``keep_existing`` an existing (current-format) ``split.csv`` pins the splits of
    the files it lists: new files join their near-duplicate group's split or land in a
    split of their own by their group's hash; the test set never moves.
    """
    samples = discover(root)
    checks = inspect_all(root, [s.path for s in samples], min_size=min_size)
    hashes = {
        c.path: manifest.Hashes(c.sha256, c.pixels, c.phash, c.phash_mirror)
        for c in checks
        if not c.reason and c.phash is not None and c.phash_mirror is not None
    }
    rows, dropped = manifest.split(
        samples,
        hashes,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        threshold=threshold,
        previous=_previous(root) if keep_existing else None,
    )
    report = _report(root, rows, checks, threshold)
    report.duplicates_dropped = [{"path": d.path, "reason": d.reason} for d in dropped]
    if report.ok:
        manifest.write(rows, manifest.path_of(root))
    report.write(root / REPORT_NAME)
    return report


def validate(root: Path, *, min_size: int = 32, threshold: int = neardup.THRESHOLD) -> Report:
    """Re-check an existing manifest: files present, unchanged, readable, leak-free."""
    path = manifest.path_of(root)
    if not path.is_file():
        raise DataError(f"no split manifest at {path}: run 'make data' first")
    try:
        rows = manifest.read(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    checks = inspect_all(root, [r.path for r in rows if (root / r.path).is_file()], min_size=min_size)
    report = _report(root, rows, checks, threshold)
    by_path = {c.path: c for c in checks}
    for row in rows:
        check = by_path.get(row.path)
        if check is None:
            report.problems.append(f"listed in the manifest but missing: {row.path}")
        elif not check.reason and check.sha256 != row.sha256:
            report.problems.append(f"changed since the manifest was written: {row.path}")
    if report.rejected:
        report.problems.append(f"{len(report.rejected)} file(s) in the manifest are unusable")
    report.write(root / REPORT_NAME)
    return report
