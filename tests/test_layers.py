"""The import layers of docs/architecture.md, read from the source with ``ast`` (nothing is imported).

Bottom to top; a module may import its own layer or a lower one, never a higher one, and no
group of modules may import each other in a circle. Every module of ``lightning_app/``,
``serve/`` and ``benchmarks/`` must sit on a layer, so a new room gets placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

LAYERS = [
    ["lightning_app/transforms.py", "lightning_app/errors.py"],
    ["lightning_app/data/", "lightning_app/models/"],
    ["lightning_app/training/", "lightning_app/inference/"],
    ["lightning_app/export/", "lightning_app/monitor/", "lightning_app/cloud/"],
    ["lightning_app/cli.py", "lightning_app/__main__.py", "lightning_app/train_entry.py",
     "lightning_app/ui/", "serve/"],
    ["benchmarks/"],
]  # fmt: skip
TOPS = ("lightning_app", "serve", "benchmarks")


def layer_of(path: str) -> int | None:
    """The layer of a repo-relative path: the longest matching prefix wins."""
    found = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
             if path == p or (p.endswith("/") and path.startswith(p))]  # fmt: skip
    return max(found)[1] if found else None


def modules(root: Path = REPO) -> dict[str, str]:
    """Dotted module name -> repo-relative path, for every ``.py`` under the three packages."""
    found: dict[str, str] = {}
    for top in TOPS:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            name = rel[:-3].replace("/", ".").removesuffix(".__init__")
            found[name] = rel
    return found


def imports(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file, function bodies too)."""
    files = modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, rel in files.items():
        package = mod if rel.endswith("__init__.py") else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse((root / rel).read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            for target in filter(None, map(resolve, names)):
                if target != mod and target not in TOPS:  # a bare package __init__ is no room
                    edges[mod].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_every_module_sits_on_a_layer() -> None:
    unplaced = [
        rel for rel in modules().values() if layer_of(rel) is None and not rel.endswith("__init__.py")
    ]
    assert unplaced == []


def test_no_import_points_up_a_layer() -> None:
    files, edges = modules(), imports()
    upward = [
        f"{files[a]} -> {files[b]}"
        for a, targets in edges.items()
        for b in targets
        if (la := layer_of(files[a])) is not None and (lb := layer_of(files[b])) is not None and lb > la
    ]
    assert upward == []


def test_no_import_circles() -> None:
    assert circles(imports()) == []


#: (importer prefix, forbidden prefixes): the walls of docs/architecture.md that layers alone allow.
WALLS = [
    ("lightning_app.models", ("lightning_app.data",)),
    (
        "lightning_app.inference",
        ("lightning_app.data", "lightning_app.training", "lightning_app.models.classifier"),
    ),
    ("lightning_app.monitor", ("serve", "lightning_app.export")),
    ("serve.handler", ("lightning_app.models.classifier", "lightning_app.data", "lightning_app.training")),
]


def test_the_walls_hold() -> None:
    broken = [
        f"{a} -> {b}"
        for a, targets in imports().items()
        for prefix, forbidden in WALLS
        if a == prefix or a.startswith(prefix + ".")
        for b in targets
        if any(b == f or b.startswith(f + ".") for f in forbidden)
    ]
    assert broken == []


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The rules on a two-file tree: ``data`` importing ``cloud`` is both up a layer and a circle."""
    (tmp_path / "lightning_app" / "data").mkdir(parents=True)
    (tmp_path / "lightning_app" / "cloud").mkdir()
    (tmp_path / "lightning_app" / "data" / "a.py").write_text("from lightning_app.cloud import b\n")
    (tmp_path / "lightning_app" / "cloud" / "b.py").write_text("def f():\n    from ..data import a\n")
    for top in ("serve", "benchmarks"):
        (tmp_path / top).mkdir()
    edges = imports(tmp_path)
    assert edges == {
        "lightning_app.data.a": {"lightning_app.cloud.b"},
        "lightning_app.cloud.b": {"lightning_app.data.a"},
    }
    assert circles(edges) == [["lightning_app.cloud.b", "lightning_app.data.a"]]
    assert layer_of("lightning_app/data/a.py") == 1 and layer_of("lightning_app/cloud/b.py") == 3
