"""``python -m lightning_app.data {prepare,validate}``: the data CLI used by ``make data``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning_app.data.sources import DataError, embedded_br35h, materialise
from lightning_app.data.validate import REPORT_NAME, Report, prepare, validate


def _print(report: Report, root: Path) -> None:
    print(report.table())
    for item in report.rejected:
        print(f"skipped {item['path']}: {item['reason']}")
    for item in report.duplicates_dropped:
        print(f"dropped {item['path']}: {item['reason']}")
    print(f"report: {root / REPORT_NAME}")
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lightning_app.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="inspect, deduplicate and split an image-folder root")
    prep.add_argument("--root", type=Path, required=True, help="image-folder root")
    prep.add_argument("--embedded", action="store_true", help="first copy the embedded Br35H set to --root")
    prep.add_argument("--seed", type=int, default=42)
    prep.add_argument("--val-fraction", type=float, default=0.15)
    prep.add_argument("--test-fraction", type=float, default=0.15)
    prep.add_argument("--min-size", type=int, default=32, help="smallest accepted side, pixels")
    prep.add_argument("--force", action="store_true", help="rewrite an existing split.csv")
    val = sub.add_parser("validate", help="re-check a prepared root against its split.csv")
    val.add_argument("--root", type=Path, required=True)
    val.add_argument("--min-size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            if args.embedded:
                materialise(embedded_br35h(), args.root)
            if (args.root / "split.csv").is_file() and not args.force:
                print(f"{args.root}/split.csv exists (use --force to re-split); validating it")
                report = validate(args.root, min_size=args.min_size)
            else:
                report = prepare(
                    args.root,
                    seed=args.seed,
                    val_fraction=args.val_fraction,
                    test_fraction=args.test_fraction,
                    min_size=args.min_size,
                )
        else:
            report = validate(args.root, min_size=args.min_size)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print(report, args.root)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
