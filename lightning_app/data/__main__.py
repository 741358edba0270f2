"""``python -m lightning_app.data {prepare,validate,evidence,stats}``: the data CLI used by ``make data``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning_app.data import manifest, neardup
from lightning_app.data.sources import DataError, embedded_br35h, materialise
from lightning_app.data.validate import REPORT_NAME, Report, prepare, validate


def _print(report: Report, root: Path) -> None:
    print(report.table())
    for item in report.rejected:
        print(f"skipped {item['path']}: {item['reason']}")
    dropped = report.duplicates_dropped
    for item in dropped[:20]:
        print(f"dropped {item['path']}: {item['reason']}")
    if len(dropped) > 20:
        print(f"... {len(dropped) - 20} more dropped files listed in {root / REPORT_NAME}")
    print(f"report: {root / REPORT_NAME}")
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)


def _prepare(args: argparse.Namespace) -> Report:
    if args.embedded:
        materialise(embedded_br35h(), args.root)
    path = manifest.path_of(args.root)
    keep = False
    if path.is_file() and not args.force:
        try:
            before = path.read_bytes()
            manifest.read(path)
            keep = True
        except manifest.OldManifestError:
            print(f"{path} has no near-duplicate groups (old format): re-splitting leak-free")
    options = {"seed": args.seed, "val_fraction": args.val_fraction, "test_fraction": args.test_fraction}
    report = prepare(
        args.root, min_size=args.min_size, threshold=args.threshold, keep_existing=keep, **options
    )
    if keep:
        same = path.read_bytes() == before
        print(f"{path} exists: kept its splits" + (" (unchanged)" if same else "; new files were added"))
    return report


def _stats(args: argparse.Namespace) -> int:
    from lightning_app.data.stats import report

    text = report(args.root, base_manifest=args.base_manifest, base_dvc=args.base_dvc, head_dvc=args.head_dvc)
    print(text, end="")
    if args.out is not None:
        with args.out.open("a") as out:
            out.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lightning_app.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="inspect, deduplicate, group near-duplicates and split a root")
    prep.add_argument("--root", type=Path, required=True, help="image-folder root")
    prep.add_argument("--embedded", action="store_true", help="first copy the embedded Br35H set to --root")
    prep.add_argument("--seed", type=int, default=42)
    prep.add_argument("--val-fraction", type=float, default=0.15)
    prep.add_argument("--test-fraction", type=float, default=0.15)
    prep.add_argument("--min-size", type=int, default=32, help="smallest accepted side, pixels")
    prep.add_argument("--force", action="store_true", help="re-split from scratch, ignoring split.csv")
    for p in (prep, val := sub.add_parser("validate", help="re-check a prepared root against split.csv")):
        p.add_argument(
            "--threshold", type=int, default=neardup.THRESHOLD, help="near-duplicate pHash Hamming distance"
        )
    val.add_argument("--root", type=Path, required=True)
    val.add_argument("--min-size", type=int, default=32)
    ev = sub.add_parser("evidence", help="measure near-duplicate groups per threshold (docs/data.md)")
    ev.add_argument("--root", type=Path, required=True)
    ev.add_argument("--out", type=Path, default=Path("reports/neardup"), help="margin-pair images go here")
    ev.add_argument("--split-csv", type=Path, help="count the leaks of this split.csv (default: the root's)")
    st = sub.add_parser(
        "stats", help="statistics of a prepared root and its diff against a base, as markdown"
    )
    st.add_argument("--root", type=Path, required=True)
    st.add_argument("--base-manifest", type=Path, help="the base version's split.csv (e.g. main's)")
    st.add_argument("--base-dvc", type=Path, help="the base version's data.dvc")
    st.add_argument("--head-dvc", type=Path, help="this version's data.dvc")
    st.add_argument(
        "--out", type=Path, help="also append the markdown to this file (e.g. $GITHUB_STEP_SUMMARY)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "stats":
            return _stats(args)
        if args.command == "evidence":
            from lightning_app.data.evidence import main as evidence

            return evidence(args.root, args.out, args.split_csv)
        if args.command == "prepare":
            report = _prepare(args)
        else:
            report = validate(args.root, min_size=args.min_size, threshold=args.threshold)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print(report, args.root)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
