"""MkDocs hooks for `make docs`: the site is README.md, docs/ and
BENCHMARKS.md, whose links are written for reading the markdown in the
repository. Here README.md becomes the site's home page, BENCHMARKS.md a
page beside docs/, and the links are rewritten to match; a link to a source
file (not part of the site) keeps its text and loses its link."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = {"index.md": ROOT / "README.md", "BENCHMARKS.md": ROOT / "BENCHMARKS.md"}

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def slugify(value: str, separator: str) -> str:
    """GitHub's anchor for a heading (as tests/test_docs.py computes it), so
    that one link works on GitHub and on the site. pymdownx's slugify would
    drop `<id>` in a heading as if it were an HTML tag."""
    return re.sub(r"[^\w\- ]", "", value.strip().lower()).replace(" ", separator)


def on_files(files, config):
    for name, path in OUTSIDE.items():
        files.append(File.generated(config, name, content=path.read_text(encoding="utf-8")))
    return files


def _site_target(target: str, page_dir: Path) -> str | None:
    """Where a repository link points on the site, or None (not a page)."""
    path = (page_dir / target).resolve()
    if path == ROOT / "README.md":
        return "index.md"
    if path == ROOT / "BENCHMARKS.md":
        return "BENCHMARKS.md"
    if path.is_relative_to(ROOT / "docs"):
        return path.relative_to(ROOT / "docs").as_posix()
    return None


def on_page_markdown(markdown, page, config, files):
    source = OUTSIDE.get(page.file.src_uri, ROOT / "docs" / page.file.src_uri)

    def rewrite(match):
        bang, text, href = match.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:", href) or href.startswith("#"):
            return match.group(0)
        target, hash_, anchor = href.partition("#")
        site = _site_target(target, source.parent)
        if site is None:
            return text
        return f"{bang}[{text}]({site}{hash_}{anchor})"

    return _LINK.sub(rewrite, markdown)
