"""Where benchmark results go, shared by the benchmark scripts: a marked section of
docs/benchmarks.md, and the raw numbers as ``reports/<name>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
REPORTS = DOC.parents[1] / "reports"


def write_section(name: str, text: str, doc_path: Path = DOC) -> None:
    """Replace the ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->`` block (or append it)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc_path.parent.mkdir(exist_ok=True)
    doc = doc_path.read_text() if doc_path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    doc_path.write_text(doc)
    print(f"{name}: written to {doc_path}")


def save_report(name: str, report: dict[str, Any]) -> Path:
    """The run's raw numbers as ``reports/<name>.json`` (values JSON cannot hold as strings)."""
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def publish(section: str, report: dict[str, Any], text: str, *, doc: bool = True) -> None:
    """A run's ending: raw numbers to ``reports/`` (``bench-x`` -> ``bench_x.json``), the text
    into the ``section`` markers of docs/benchmarks.md unless ``doc`` is false, and to stdout."""
    save_report(section.replace("-", "_"), report)
    if doc:
        write_section(section, text)
    print(text)
