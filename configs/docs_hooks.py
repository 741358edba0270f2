"""MkDocs hook (``hooks:`` in configs/mkdocs.yml): site pages include README sections.

A page line ``<!-- readme: Training -->`` becomes the body of README.md's ``## Training...``
section (up to the next ``## `` heading), so the README stays the one copy and sections
others extend need no markers. Links are rewritten for the site: ``docs/x.md`` -> ``x.md``;
other repository paths (``configs/...``) become code text. A missing section fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
INCLUDE = re.compile(r"^<!-- readme: (.+?) -->$", re.M)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def section(text: str, title: str) -> str:
    """The lines under ``## <title>...`` up to the next level-2 heading (code fences respected)."""
    out: list[str] = []
    inside = fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip().startswith(title)
            continue
        if inside and not line.startswith("<!-- --8<--"):
            out.append(line)
    if not out:
        raise ValueError(f"README.md has no section '## {title}'")
    return "\n".join(out)


def site_link(match: re.Match[str]) -> str:
    """``docs/x`` -> ``x``; URLs and anchors unchanged; other repository paths -> code text."""
    bang, text, target = match.groups()
    if target.startswith(("http://", "https://", "#", "mailto:")):
        return match.group(0)
    if target.startswith("docs/"):
        return f"{bang}[{text}]({target.removeprefix('docs/')})"
    return f"{text} (`{target}`)" if text != target else f"`{target}`"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand ``<!-- readme: Title -->`` lines."""
    readme = README.read_text()
    return INCLUDE.sub(lambda m: LINK.sub(site_link, section(readme, m.group(1).strip())), markdown)
