"""Docstrings and notebooks cite only Markdown files (and sections) that exist in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "uotisp_lib").rglob("*.py"), *(ROOT / "notebooks").glob("*.py")])
#: a relative path ending in .md; not part of a template such as ``results/<profile>/README.md``
MD_PATH = re.compile(r"(?<![\w/<>{}.*-])([\w-]+(?:/[\w.-]+)*\.md)\b")
#: ``docs/references.md "Section"`` or ``docs/references.md, "Section"``
SECTION = re.compile(r"docs/references\.md,?\s+\"([^\"]+)\"")


def md_citations(text: str) -> list[str]:
    return MD_PATH.findall(text)


def test_pattern_finds_paths_and_skips_templates():
    text = 'see docs/references.md "Matching"; results/<profile>/README.md, tables/{name}.md, glob("*.md")'
    assert md_citations(text) == ["docs/references.md"]
    assert md_citations("(REFERENCE.md, UOTM)") == ["REFERENCE.md"]


def test_every_cited_markdown_file_exists():
    cited: dict[str, list[str]] = {}
    for py in SOURCES:
        for path in md_citations(py.read_text()):
            cited.setdefault(path, []).append(str(py.relative_to(ROOT)))
    missing = {p: files for p, files in cited.items() if not (ROOT / p).is_file()}
    assert not missing, f"cited Markdown files that do not exist: {missing}"
    assert "docs/references.md" in cited  # the library does cite its references page


def test_cited_sections_of_the_references_exist():
    headings = {
        line.lstrip("#").strip()
        for line in (ROOT / "docs" / "references.md").read_text().splitlines()
        if line.startswith("#")
    }
    sections = {s for py in SOURCES for s in SECTION.findall(py.read_text())}
    assert {"Matching", "Preprocessing"} <= sections
    unknown = {s for s in sections if not any(h.startswith(s) for h in headings)}
    assert not unknown, f"docs/references.md has no section {sorted(unknown)}"
