"""``python -m lightning_app.export`` (``make mar``): the command line over :mod:`lightning_app.export.build`.

Reads its flags and ``MONITOR_PCA_DIM`` once, here; every failure is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_app.export import build
from lightning_app.export.context import ExportError
from lightning_app.export.ood import ood_summary
from lightning_app.inference.artefacts import MODEL_NAME
from lightning_app.inference.cascade import CascadeRule


def served_backend(meta: dict[str, Any]) -> str:
    """One line on the served backend: precision and its parity numbers (or why it is fp32)."""
    backend = meta.get("backend", {})
    parity = backend.get("parity")
    if not parity:
        return f"{backend.get('precision', 'fp32')} {backend.get('note', '')}".strip()
    line = (
        f"{backend['precision']} ({backend['file']}): top-1 agreement {parity['agreement']:.2%}, accuracy "
        f"{parity['accuracy']:.2%} vs fp32 {parity['fp32_accuracy']:.2%}, max |prob diff| "
        f"{parity['max_abs_prob_diff']:.3f} on {parity['images']} held-out images"
    )
    refused = backend.get("cascade_refused")
    if refused:
        rule = refused["rule"]
        line += (
            f"\ncascade:    refused by its gate (confidence {rule['confidence']}, margin {rule['margin']}: "
            f"{'; '.join(refused['problems'])}): the whole ensemble is served"
        )
    cascade = backend.get("cascade")
    if cascade:
        rule, gate = cascade["rule"], cascade["parity"]
        line += (
            f"\ncascade:    {cascade['file']}, then {cascade['followers']} on the doubtful scans "
            f"(confidence {rule['confidence']}, margin {rule['margin']}; they replace "
            f"{cascade['replaces']}): {gate['deferred']:.1%} deferred, against the fp32 ensemble "
            f"top-1 agreement {gate['agreement']:.2%}, screening decisions "
            f"{gate.get('decision_agreement', float('nan')):.2%}, "
            f"accuracy {gate['accuracy']:.2%} vs {gate['fp32_accuracy']:.2%}"
        )
    return line


def env_pca_dim(env: Mapping[str, str]) -> int | None:
    """``MONITOR_PCA_DIM`` (the export CLI's edge reads it; the reference step takes an option)."""
    raw = env.get("MONITOR_PCA_DIM", "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ExportError(f"MONITOR_PCA_DIM={raw!r}: expected a whole number") from None


def cascade_rule(confidence: float | None, margin: float) -> CascadeRule | None:
    """The ``--cascade``/``--cascade-margin`` rule (``None`` without ``--cascade``), or ``ExportError``."""
    if confidence is None:
        return None
    try:
        return CascadeRule(confidence, margin)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m lightning_app.export``: one-line errors, exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.export",
        description="Export a checkpoint into the TorchServe .mar (make mar).",
    )
    parser.add_argument("--ckpt", type=Path, help="checkpoint (default: newest best-*.ckpt under --runs)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where to look for checkpoints")
    parser.add_argument("--out", type=Path, default=Path("model_store"), help="directory of the .mar")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument(
        "--data", type=Path, help="prepared data root for export steps (default: the checkpoint's data_dir)"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "onnx-fp32", "int8"),
        help="served backend (default: int8 when the training data is available, else fp32)",
    )
    parser.add_argument(
        "--cascade",
        type=float,
        metavar="C",
        help="serve an ensemble as a cascade: its first member alone where its top probability reaches C",
    )
    parser.add_argument(
        "--cascade-margin",
        type=float,
        default=0.0,
        metavar="M",
        help="and its screening score at least M log-odds from the operating point's threshold (default 0)",
    )
    parser.add_argument(
        "--cascade-fallback",
        action="store_true",
        help="serve the whole ensemble, and say so, where the cascade's gate refuses it (default: fail)",
    )
    parser.add_argument(
        "--pca-dim", type=int, metavar="K", help="embedding components (default: $MONITOR_PCA_DIM, else 16)"
    )
    args = parser.parse_args(argv)
    try:
        pca_dim = args.pca_dim if args.pca_dim is not None else env_pca_dim(os.environ)
        cascade = cascade_rule(args.cascade, args.cascade_margin)
        checkpoint = args.ckpt or build.newest_best_checkpoint(args.runs)
        data_dir = args.data or build.training_data_dir(checkpoint)
        mar = build.build_mar(
            checkpoint,
            args.out,
            model_name=args.model_name,
            data_dir=data_dir,
            precision=args.precision,
            pca_dim=pca_dim,
            cascade=cascade,
            cascade_fallback=args.cascade_fallback,
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = mar.stat().st_size / 2**20
    print(f"checkpoint: {checkpoint}\narchive:    {mar} ({size:.1f} MiB)")
    meta = build.mar_meta(mar)
    print(f"backend:    {served_backend(meta)}")
    print(f"ood guard:  {ood_summary(meta.get('ood', {}))}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
