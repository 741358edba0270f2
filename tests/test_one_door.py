"""One door per outside thing, read from the source with ``ast``: ``split.csv`` only through
``data/manifest.py``, ``gcsfs`` only through ``cloud/gcs.py``, the shared cloud variables only
through ``cloud/settings.py``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SOURCES = sorted(p for top in ("lightning_app", "serve", "benchmarks") for p in (REPO / top).rglob("*.py"))
CLOUD_VARIABLES = {"PROJECT", "GOOGLE_CLOUD_PROJECT", "REGION", "REPO", "IMAGE_TAG", "IMAGE_URI", "BUCKET"}


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_the_manifest_file_name_is_spelt_only_in_the_manifest_module() -> None:
    spelt = [
        rel(p)
        for p in SOURCES
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Constant) and node.value == "split.csv"
    ]
    assert spelt == ["lightning_app/data/manifest.py"]


def test_gcsfs_is_imported_only_by_the_gcs_module() -> None:
    importers = set()
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "gcsfs" or n.startswith("gcsfs.") for n in names):
                importers.add(rel(p))
    assert importers == {"lightning_app/cloud/gcs.py"}


def test_the_shared_cloud_variables_are_read_only_by_the_settings_module() -> None:
    readers = set()
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in CLOUD_VARIABLES
            ):
                readers.add(rel(p))
    assert readers == {"lightning_app/cloud/settings.py"}
