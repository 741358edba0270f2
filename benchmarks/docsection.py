"""Replace one marked section of docs/benchmarks.md: shared by the benchmark scripts."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


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
