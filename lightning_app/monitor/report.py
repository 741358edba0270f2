"""The drift report: Markdown with one figure of plots, plus the JSON verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lightning_app.monitor.drift import Verdict, log_size
from lightning_app.monitor.table import Table

REPORT, FIGURE, VERDICT = "drift_report.md", "drift_report.png", "verdict.json"


def plot(window: Table, reference: Table, path: Path) -> Path:
    """Window vs reference: class mix, confidence, intensities, image size, embedding PC1/PC2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    sides = (("reference", reference, "tab:blue"), ("window", window, "tab:orange"))
    classes = sorted(set(reference.columns["predicted"]) | set(window.columns["predicted"]))
    ax = axes[0, 0]
    for offset, (label, table, color) in zip((-0.2, 0.2), sides, strict=True):
        share = [np.mean(table.columns["predicted"] == c) if len(table) else 0 for c in classes]
        ax.bar(np.arange(len(classes)) + offset, share, width=0.4, label=label, color=color)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_title("predicted class share")
    ax.legend()
    panels = [
        (axes[0, 1], "confidence", lambda t: t.columns["confidence"]),
        (axes[0, 2], "intensity mean", lambda t: t.columns["intensity_mean"]),
        (axes[1, 0], "intensity std", lambda t: t.columns["intensity_std"]),
        (axes[1, 1], "log10 source pixels", log_size),
    ]
    for ax, title, column in panels:
        for label, table, color in sides:
            values = column(table)
            values = values[np.isfinite(values)]
            if len(values):
                ax.hist(values, bins=30, density=True, alpha=0.5, label=label, color=color)
        ax.set_title(title)
    ax = axes[1, 2]
    for label, table, color in sides:
        emb = table.embedding
        if emb.ndim == 2 and emb.shape[1] >= 2:
            ax.scatter(emb[:, 0], emb[:, 1], s=6, alpha=0.5, label=label, color=color)
    ax.set_title("embedding PC1 / PC2")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.2g}"


def markdown(verdict: Verdict, context: dict[str, Any]) -> str:
    """The report's text."""
    head = {"drift": "**DRIFT DETECTED**", "no_drift": "no drift", "insufficient_data": "no verdict"}
    lines = [
        "# Drift report",
        "",
        f"Verdict: {head[verdict.status]} — window of {verdict.window} predictions vs "
        f"{verdict.reference} reference scans ({context.get('reference_split', 'val')} split).",
        "",
        f"Reference: {verdict.context.get('reference_scans', '')}. The window is assumed to be distinct "
        "scans (distinct patients): near-copies of one scan in it make alarms more likely.",
        "",
        f"Significance: alpha = {verdict.alpha} overall; Bonferroni over the tests that ran, "
        f"so each test alarms at p < {verdict.threshold:.3g}.",
        "",
    ]
    for key, value in context.items():
        lines.append(f"- {key}: {value}")
    if verdict.status == "insufficient_data":
        lines += ["", f"No tests: {verdict.context.get('why', '')}."]
    else:
        lines += ["", "| test | method | statistic | p-value | drift |", "|---|---|---|---|---|"]
        for t in verdict.tests:
            stat = "—" if t.statistic is None else f"{t.statistic:.4g}"
            flag = "**yes**" if t.drift else ("n/a: " + t.note if t.p_value is None else "no")
            lines.append(f"| {t.name} | {t.method} | {stat} | {_p(t.p_value)} | {flag} |")
        lines += ["", f"![window vs reference]({FIGURE})"]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path, verdict: Verdict, window: Table, reference: Table, context: dict[str, Any]
) -> list[Path]:
    """Write the Markdown report, its figure and ``verdict.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / REPORT, out_dir / VERDICT]
    if verdict.status != "insufficient_data":
        paths.append(plot(window, reference, out_dir / FIGURE))
    (out_dir / REPORT).write_text(markdown(verdict, context))
    (out_dir / VERDICT).write_text(
        json.dumps({**verdict.as_dict(), "context": {**verdict.context, **context}}, indent=2) + "\n"
    )
    return paths
