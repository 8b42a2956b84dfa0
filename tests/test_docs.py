"""The docs hold together: every relative link and #anchor in README.md,
BENCHMARKS.md and docs/ resolves, every file they name exists, every setting
the code reads is on the configuration page, every route of the OpenAPI
document is on the API page, and the README stays short.

Markdown is read with markdown-it-py (CommonMark with tables), so links,
headings and code spans are what a renderer sees, not what a regex guesses.
Anchors are GitHub's: the heading's text, lower case, punctuation dropped,
spaces turned into hyphens, "-1", "-2" … for repeats."""

from __future__ import annotations

import ast
import json
import os
import re
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_LINES = 300

# Where the settings are read: every module of these that reads the
# environment (core/settings.py holds the API's and the Calculator's).
SETTING_SOURCES = ["core", "api", "worker", "tools"]
NOT_SETTINGS = {"PATH"}   # the system's, read to find pg_ctl

_PARSER = MarkdownIt("commonmark").enable("table")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted(DOCS.glob("*.md"))]


@cache
def tokens(path: Path):
    return _PARSER.parse(path.read_text(encoding="utf-8"))


def inline_text(inline) -> str:
    """The text a reader sees of an inline token (code spans included)."""
    return "".join(child.content for child in inline.children if child.type in ("text", "code_inline"))


def slug(text: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    toks = tokens(path)
    for i, tok in enumerate(toks):
        if tok.type == "heading_open":
            base = slug(inline_text(toks[i + 1]))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return frozenset(found)


def inline_children(path: Path):
    for tok in tokens(path):
        if tok.type == "inline":
            yield from tok.children


def links(path: Path) -> list[str]:
    out = []
    for child in inline_children(path):
        if child.type == "link_open":
            out.append(child.attrs["href"])
        elif child.type == "image":
            out.append(child.attrs["src"])
    return out


def broken_links(path: Path) -> list[str]:
    problems = []
    for href in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", href):   # http:, https:, mailto:
            continue
        target, _, anchor = href.partition("#")
        file = (path.parent / target).resolve() if target else path
        where = f"{path.relative_to(ROOT)}: ({href})"
        if not file.is_relative_to(ROOT) or not file.exists():
            problems.append(f"{where}: no file {target}")
        elif anchor and file.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not markdown")
        elif anchor and anchor not in anchors(file):
            problems.append(f"{where}: no heading with the anchor #{anchor} in {file.relative_to(ROOT)}")
    return problems


_REPO_PATH = re.compile(r"(?:api|core|worker|sql|tests|bench|tools|deploy|docs)/[\w./*<>-]+")


def missing_paths(path: Path) -> list[str]:
    """Files named in code spans (`sql/001_tasks.sql`) that do not exist."""
    problems = []
    for child in inline_children(path):
        if child.type == "code_inline" and _REPO_PATH.fullmatch(child.content):
            name = child.content
            if "<" in name or "/.venv" in name:   # a pattern (docs/<page>.md), or made by make
                continue
            if not (list(ROOT.glob(name)) if "*" in name else (ROOT / name).exists()):
                problems.append(f"{path.relative_to(ROOT)}: `{name}` does not exist")
    return problems


def code_spans_in_table_first_cells(path: Path) -> set[str]:
    spans = set()
    toks = tokens(path)
    for i, tok in enumerate(toks):
        if tok.type == "tr_open" and toks[i + 1].type == "td_open":
            spans.update(child.content for child in toks[i + 2].children if child.type == "code_inline")
    return spans


def _module_constants(tree: ast.Module) -> dict[str, str]:
    consts = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            consts[node.targets[0].id] = node.value.value
    return consts


def _is_environ(node: ast.AST) -> bool:
    return ast.unparse(node).split(".")[-1] == "environ"


def environment_reads(path: Path) -> set[str]:
    """Names the module reads from the environment: environ.get("X"),
    environ["X"], "X" in environ, and in core/settings.py every name handed
    to its readers (_number(environ, "X", …))."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    consts = _module_constants(tree)

    def name_of(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return consts.get(node.id)
        return None

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
                found.add(name_of(node.args[0]))
            elif len(node.args) >= 2 and _is_environ(node.args[0]):
                found.add(name_of(node.args[1]))
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            found.add(name_of(node.slice))
        elif (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In)
              and _is_environ(node.comparators[0])):
            found.add(name_of(node.left))
    return {name for name in found if name and re.fullmatch(r"[A-Z][A-Z0-9_]+", name)} - NOT_SETTINGS


def settings_in_code() -> dict[str, str]:
    found = {}
    for directory in SETTING_SOURCES:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for name in environment_reads(path):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def routes_in_openapi() -> list[str]:
    document = json.loads((ROOT / "api" / "openapi.json").read_text(encoding="utf-8"))
    return [f"{method.upper()} {path}" for path, operations in document["paths"].items()
            for method in operations if method in ("get", "post", "put", "patch", "delete")]


def _route_shape(route: str) -> str:
    """GET /api/result/{expression_id} and GET /api/result/<id> are one route."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "<>", route)


def routes_on_page(path: Path) -> set[str]:
    """The routes in the first column of the page's tables (its route index)."""
    return {_route_shape(span) for span in code_spans_in_table_first_cells(path)
            if re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE) /\S*", span)}


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_named_in_the_docs_exists(path):
    assert missing_paths(path) == []


def test_every_setting_the_code_reads_is_on_the_configuration_page():
    in_code = settings_in_code()
    # The reader must see the settings it knows: a sample, so that a reader
    # that finds nothing cannot pass.
    assert {"TASK_NUM", "AUTH", "DATABASE_URL", "RESULT_RETENTION", "WEB_CONCURRENCY",
            "PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT"} <= in_code.keys()
    documented = code_spans_in_table_first_cells(DOCS / "configuration.md")
    missing = {name: where for name, where in in_code.items() if name not in documented}
    assert missing == {}, "settings read by the code but not in a table of docs/configuration.md"


def test_every_route_of_the_openapi_document_is_on_the_api_page():
    routes = routes_in_openapi()
    assert len(routes) >= 10
    on_page = routes_on_page(DOCS / "api.md")
    missing = [route for route in routes if _route_shape(route) not in on_page]
    assert missing == [], "routes of api/openapi.json not in the route table of docs/api.md"
    unknown = on_page - {_route_shape(route) for route in routes}
    assert unknown == set(), "routes in the table of docs/api.md that api/openapi.json does not have"


def test_every_page_says_first_what_it_covers():
    for path in sorted(DOCS.glob("*.md")):
        toks = tokens(path)
        assert toks[0].type == "heading_open" and toks[0].tag == "h1", f"{path.name} starts with its title"
        assert toks[3].type == "paragraph_open", f"{path.name}: a paragraph saying what it covers follows the title"


def test_the_readme_is_short_and_maps_every_page():
    readme = ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES
    linked = {(readme.parent / href.partition("#")[0]).resolve() for href in links(readme)}
    unmapped = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert unmapped == [], "docs pages the README does not link to"


def test_no_reference_points_at_an_issue_number():
    """A reader of the repository cannot open the issues: say the thing itself."""
    pattern = re.compile(r"\bissues? #?[0-9]+", re.IGNORECASE)
    skip = {".git", ".venv", ".run", "node_modules", "__pycache__", ".hypothesis", ".pytest_cache", "site"}
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in skip and not d.startswith(".venv")]
        for name in files:
            path = Path(directory, name)
            if path.suffix in (".png", ".pyc") or path.parent.name == "results":   # bench/results: raw figures
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            found += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if pattern.search(line)]
    assert found == []


def test_anchors_are_githubs():
    assert slug("`POST /api/result/<id>/cancel` and `POST /api/results/cancel`") == \
        "post-apiresultidcancel-and-post-apiresultscancel"
    assert slug("How this is built on py_expression_eval") == "how-this-is-built-on-py_expression_eval"
    assert slug("Steady state: the table's size under a constant load") == \
        "steady-state-the-tables-size-under-a-constant-load"
