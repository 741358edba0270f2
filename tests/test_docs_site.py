"""The docs site's README includes (configs/docs_hooks.py); `make docs` (strict) runs in .ci/run."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "configs/docs_hooks.py")
assert spec and spec.loader
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)


def test_every_readme_include_names_a_section_and_links_are_rewritten_for_the_site() -> None:
    readme = (REPO / "README.md").read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        for title in hooks.INCLUDE.findall(page.read_text()):
            assert hooks.section(readme, title.strip()), f"{page.name}: {title}"
    page = hooks.on_page_markdown("x\n<!-- readme: Training -->\n", None, None, None)
    assert "make fit" in page and "](docs/" not in page
    assert hooks.LINK.sub(hooks.site_link, "[b](docs/benchmarks.md#x)") == "[b](benchmarks.md#x)"
    assert hooks.LINK.sub(hooks.site_link, "[cfg](configs/a.yaml)") == "cfg (`configs/a.yaml`)"
    assert hooks.LINK.sub(hooks.site_link, "[w](https://x.org/docs/a)") == "[w](https://x.org/docs/a)"
    with pytest.raises(ValueError, match="no section '## Nope'"):
        hooks.section(readme, "Nope")
