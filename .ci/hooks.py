"""Whitespace and YAML checks for pre-commit (``repo: local``: hook repos cannot be cloned).

``python .ci/hooks.py {whitespace,eof,yaml,conflicts} FILE...`` reports problems, one
line each, and exits 1 if there are any; it never rewrites a file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import yaml


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary or unreadable: not ours to judge


def whitespace(path: Path) -> list[str]:
    """Lines that end in spaces or tabs."""
    text = _text(path) or ""
    lines = text.splitlines()
    return [f"{path}:{n}: trailing whitespace" for n, line in enumerate(lines, 1) if line != line.rstrip()]


def eof(path: Path) -> list[str]:
    """Report a non-empty file that does not end in exactly one newline."""
    text = _text(path)
    if not text:
        return []
    if not text.endswith("\n"):
        return [f"{path}: no newline at end of file"]
    return [f"{path}: blank lines at end of file"] if text.endswith("\n\n") else []


class _AnyTagLoader(yaml.SafeLoader):
    """Safe loader that accepts custom tags (e.g. ``!reference``) as plain values."""


_AnyTagLoader.add_multi_constructor("", lambda loader, suffix, node: None)


def yaml_ok(path: Path) -> list[str]:
    """Report a file that does not parse as YAML (all documents)."""
    try:
        list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_AnyTagLoader))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return [f"{path}: invalid YAML: {' '.join(str(exc).split())}"]
    return []


def conflicts(path: Path) -> list[str]:
    """Leftover merge-conflict markers."""
    text = _text(path) or ""
    markers = ("<<<<<<< ", "=======\n", ">>>>>>> ")
    lines = enumerate(text.splitlines(keepends=True), 1)
    return [f"{path}:{n}: merge conflict marker" for n, line in lines if line.startswith(markers)]


CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "whitespace": whitespace,
    "eof": eof,
    "yaml": yaml_ok,
    "conflicts": conflicts,
}


def main(argv: list[str]) -> int:
    """Run one check on the given files; 1 if any problem was found."""
    if not argv or argv[0] not in CHECKS:
        print(f"usage: hooks.py {{{','.join(CHECKS)}}} FILE...", file=sys.stderr)
        return 2
    problems = [p for name in argv[1:] for p in CHECKS[argv[0]](Path(name))]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
