"""Leak check of a split manifest: near-duplicates (and group ids) that cross splits.

Used by ``prepare`` and ``validate`` (``make validate-data``). Images, groups and leaks are
counted per split; every cross-split pair is named, so a failing check says which files.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from lightning_app.data import manifest, neardup
from lightning_app.data.manifest import SPLITS, Row

#: The floor every split must pass: a plain 64-bit DCT pHash at Hamming distance <= 6.
CHECK_THRESHOLD = 6
#: Cross-split pairs named in a problem message (all are in the report).
NAMED = 10


@dataclass
class LeakCheck:
    """Per-split counts and the cross-split near-duplicate pairs found."""

    threshold: int
    mirror_threshold: int
    images: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    leaks: dict[str, int] = field(default_factory=dict)
    pairs: list[dict[str, str | int]] = field(default_factory=list)
    split_groups: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One line per kind of leak, naming the files."""
        out: list[str] = []
        if self.pairs:
            named = "; ".join(
                f"{p['a']} ({p['split_a']}) ~ {p['b']} ({p['split_b']}), {p['distance']} bits"
                + (" mirrored" if p["mirrored"] else "")
                for p in self.pairs[:NAMED]
            )
            more = f" and {len(self.pairs) - NAMED} more" if len(self.pairs) > NAMED else ""
            out.append(
                f"{len(self.pairs)} near-duplicate pair(s) cross splits "
                f"(pHash Hamming <= {self.threshold}, mirrored <= {self.mirror_threshold}): {named}{more}"
            )
        if self.split_groups:
            out.append(f"group id(s) listed in more than one split: {', '.join(self.split_groups[:NAMED])}")
        return out


def check(
    rows: list[Row], phashes: dict[str, tuple[int, int]], threshold: int = neardup.THRESHOLD
) -> LeakCheck:
    """Count images/groups per split and find near-duplicate pairs in different splits.

    ``phashes`` maps a path to its ``(hash, mirrored hash)``. ``threshold`` is raised to
    :data:`CHECK_THRESHOLD` if lower, so the check always covers the plain-pHash floor;
    mirrored copies are checked at :data:`neardup.MIRROR_THRESHOLD`. Rows without a
    perceptual hash (unreadable files) are counted but cannot be compared.
    """
    result = LeakCheck(threshold=max(threshold, CHECK_THRESHOLD), mirror_threshold=neardup.MIRROR_THRESHOLD)
    group_splits: dict[str, set[str]] = defaultdict(set)
    for split in SPLITS:
        in_split = manifest.rows_of(rows, split)
        result.images[split] = len(in_split)
        result.groups[split] = len({r.group for r in in_split})
    for row in rows:
        group_splits[row.group].add(row.split)
    result.split_groups = sorted(g for g, s in group_splits.items() if len(s) > 1)
    hashed = [r for r in rows if r.path in phashes]
    leaked: dict[str, set[str]] = {s: set() for s in SPLITS}
    plain, mirrored = [phashes[r.path][0] for r in hashed], [phashes[r.path][1] for r in hashed]
    for i, j, d in neardup.pairs_within(plain, result.threshold, mirrored):
        a, b = hashed[i], hashed[j]
        if a.split != b.split:
            a, b = sorted((a, b), key=lambda r: (-SPLITS.index(r.split), r.path))  # held-out side first
            result.pairs.append(
                {
                    "a": a.path,
                    "split_a": a.split,
                    "b": b.path,
                    "split_b": b.split,
                    "distance": abs(d),
                    "mirrored": d < 0,
                }
            )
            leaked[a.split].add(a.path)
            leaked[b.split].add(b.path)
    result.pairs.sort(key=lambda p: (p["distance"], p["a"], p["b"]))
    result.leaks = {s: len(leaked[s]) for s in SPLITS}
    return result
