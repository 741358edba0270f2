"""The benchmarks are modules of the ``benchmarks`` package: ``python -m benchmarks.<name>``.

None of them edits ``sys.path``, and every ``make bench-*`` target runs its module with ``-m``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from tests.conftest import REPO

BENCHES = sorted(p.stem for p in (REPO / "benchmarks").glob("bench_*.py"))


def test_no_benchmark_edits_sys_path() -> None:
    for path in (REPO / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path":
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), path.name


def test_every_make_target_runs_a_benchmark_as_a_module() -> None:
    make = (REPO / "Makefile").read_text()
    assert "python benchmarks/" not in make
    assert sorted(set(re.findall(r"python -m benchmarks\.(\w+)", make))) == BENCHES
    for name in BENCHES:
        assert 'if __name__ == "__main__":' in (REPO / "benchmarks" / f"{name}.py").read_text()


def test_a_benchmark_module_starts_with_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_decode", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--data" in result.stdout
