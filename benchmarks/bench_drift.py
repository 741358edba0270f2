"""``make bench-drift``: false-alarm rate and detection power of the drift report on real scans.

The reference is the val-split profile in the ``.mar`` (what the daily job uses), reduced by
``compare`` to one scan per near-duplicate group. Windows are made of prediction records
made in-process by the handler's code (``benchmarks.simulate.records``) from the
held-out **test** split of ``--data``, as **distinct scans**: each window takes ``n`` random
near-duplicate groups of the test split (``split.csv``'s ``group``) and one random member of
each, as a production window of distinct patients would be (seeded):

* ``none``: the test scans as they are (every alarm is a false alarm);
* ``blur``, ``noise``, ``low_resolution``, ``contrast``, ``scanner_look``: the same scans under
  each shift of ``benchmarks.simulate``;
* ``prior_tumour_only``: a 4-class Kaggle-layout tree (``Training``/``Testing`` x glioma,
  meningioma, notumor, pituitary) filled with the test split's tumour scans only, read back
  through ``lightning_app.data.sources.discover`` (a prior shift: no healthy scan at all).

A diagnostic condition, ``none, image-by-image``, draws unshifted windows the old way (random
images, near-copies included) against the whole reference (near-copies included), to show
what the distinct-scan rule fixes. For every condition and window size: the share of windows
with a drift verdict (alpha = 0.05, Bonferroni) and which tests fired. Results: a Markdown
table on stdout and ``reports/bench_drift.json``.

    uv run python -m benchmarks.bench_drift --mar model_store/brain_mri.mar --data data/br35h
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import simulate
from benchmarks.docsection import write_section
from lightning_app.data import manifest
from lightning_app.data.sources import discover
from lightning_app.inference.engine import InferenceEngine
from lightning_app.monitor.cli import load_reference
from lightning_app.monitor.drift import compare, one_per_group
from lightning_app.monitor.table import GROUP, Table

REPO = Path(__file__).resolve().parents[1]

IMAGE_BY_IMAGE = "none, image-by-image"


def kaggle_tree(files: list[Path], root: Path) -> list[tuple[bytes, str]]:
    """A Kaggle-layout tree of ``files`` (tumour scans) spread over 4 class folders; read back.

    Returns each file read back with its name (the key to its group)."""
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    for i, f in enumerate(files):
        split = "Testing" if i % 5 == 0 else "Training"
        folder = root / split / classes[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f.name).write_bytes(f.read_bytes())
    return [((root / s.path).read_bytes(), Path(s.path).name) for s in discover(root)]


def conditions(data: Path, tmp: Path) -> dict[str, tuple[list[bytes], list[str]]]:
    """Image bytes and near-duplicate group ids of each condition (see the module docstring)."""
    rows = manifest.split_rows(data, "test")
    images = [(data / r.path).read_bytes() for r in rows]
    groups = [r.group for r in rows]
    out = {"none": (images, groups)}
    for name, shift in simulate.SHIFTS.items():
        rng = np.random.default_rng(0)
        out[name] = ([simulate.shifted(b, shift, rng) for b in images], groups)
    tumours = [r for r in rows if r.label in ("yes", "tumor")]
    group_of = {Path(r.path).name: r.group for r in tumours}
    tree = kaggle_tree([data / r.path for r in tumours], tmp / "kaggle")
    out["prior_tumour_only"] = ([b for b, _ in tree], [group_of[name] for _, name in tree])
    return out


def reference_rows(reference: Table) -> Table:
    """The reference with its group ids dropped: ``compare`` then uses every row (the old way)."""
    return Table(
        {k: v for k, v in reference.columns.items() if k != GROUP}, reference.embedding, reference.meta
    )


def distinct_scans(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row mask of ``n`` random groups, one random member of each."""
    unique = np.unique(groups)
    mask = np.zeros(len(groups), dtype=bool)
    for g in rng.choice(unique, size=n, replace=False):
        mask[rng.choice(np.flatnonzero(groups == g))] = True
    return mask


def any_images(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row mask of ``n`` random rows (near-copies included: the old, wrong null)."""
    mask = np.zeros(len(groups), dtype=bool)
    mask[rng.choice(len(groups), size=n, replace=False)] = True
    return mask


def main() -> int:
    """Run every condition x window size; print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mar", type=Path, default=REPO / "model_store/brain_mri.mar")
    p.add_argument("--data", type=Path, default=REPO / "data/br35h")
    p.add_argument("--windows", type=int, nargs="+", default=[30, 60, 90])
    p.add_argument("--repeats", type=int, default=40, help="windows per shifted condition and size")
    p.add_argument("--null-repeats", type=int, default=200, help="windows of unshifted scans per size")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--permutations", type=int, default=500)
    p.add_argument("--out", type=Path, default=REPO / "reports/bench_drift.json")
    args = p.parse_args()
    started = time.perf_counter()
    reference = load_reference(str(args.mar), "val")
    results: list[dict[str, Any]] = []
    pools: dict[str, tuple[Table, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.mar) as mar:
            mar.extractall(tmp)
        engine = InferenceEngine(Path(tmp))
        for name, (imgs, ids) in conditions(args.data, Path(tmp)).items():
            pools[name] = (Table.from_records(simulate.records(engine, imgs)), np.asarray(ids))
    pools = {"none": pools["none"], IMAGE_BY_IMAGE: pools["none"], **pools}
    whole_reference = reference_rows(reference)
    for name, (pool, groups) in pools.items():
        repeats = args.null_repeats if name in ("none", IMAGE_BY_IMAGE) else args.repeats
        draw = any_images if name == IMAGE_BY_IMAGE else distinct_scans
        scans = len(np.unique(groups))
        for n in args.windows:
            if n > scans:
                print(f"{name:18s} n={n:4d} skipped: {scans} distinct scans in the pool", flush=True)
                continue
            rng = np.random.default_rng(n)
            alarms, fired = 0, Counter[str]()
            for r in range(repeats):
                verdict = compare(
                    pool.select(draw(groups, n, rng)),
                    reference if name != IMAGE_BY_IMAGE else whole_reference,
                    alpha=args.alpha,
                    permutations=args.permutations,
                    seed=r,
                )
                alarms += verdict.drift
                fired.update(t.name for t in verdict.tests if t.drift)
            results.append({"condition": name, "window": n, "windows": repeats, "pool": len(pool),
                            "pool_scans": scans, "alarm_rate": alarms / repeats,
                            "tests_fired": dict(fired)})  # fmt: skip
            print(
                f"{name:18s} n={n:4d} alarm rate {alarms / repeats:.2f} ({alarms}/{repeats}) {dict(fired)}",
                flush=True,
            )
    lines = [
        "| condition | window | windows | pool: images (scans) | alarm rate | tests that fired (count) |",
        "|---|---|---|---|---|---|",
    ]
    for row in results:
        tests = sorted(row["tests_fired"].items(), key=lambda kv: -kv[1])
        names = ", ".join(f"{k} {v}" for k, v in tests) or "—"
        lines.append(
            f"| {row['condition']} | {row['window']} | {row['windows']} | {row['pool']} "
            f"({row['pool_scans']}) | {row['alarm_rate']:.2f} | {names} |"
        )
    print("\n" + "\n".join(lines))
    meta = {
        "mar": str(args.mar),
        "reference_split": "val",
        "reference_size": len(reference),
        "reference_scans": len(one_per_group(reference)),
        "model_version": reference.meta.get("model_version"),
        "data_version": reference.meta.get("data_version"),
        "alpha": args.alpha,
        "permutations": args.permutations,
        "machine": platform.processor() or platform.machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\n{meta}")
    head = (
        f"`make bench-drift` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {meta['machine']}; reference: the "
        f"{meta['reference_size']}-image val profile ({meta['reference_scans']} distinct scans compared) "
        f"in `{args.mar.name}` (model {meta['model_version']}, "
        f"data `{meta['data_version']}`); alpha {args.alpha}, {args.permutations} permutations; "
        f"{meta['seconds']:.0f} s. Windows are distinct scans (one per near-duplicate group) "
        f"except `{IMAGE_BY_IMAGE}`. "
        "Alarm rate under `none` = false-alarm rate; elsewhere = power."
    )
    write_section("bench-drift", "\n".join([head, "", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
