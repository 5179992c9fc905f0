"""MkDocs hooks: the site's home page is the README and its results page benchmarks/RESULTS.md, both
read from where they live (so that each has one copy) with their links rewritten for the site."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
# page in the site -> (source in the repository, {link prefix there: the same target in the site})
GENERATED = {
    "index.md": ("README.md", {"docs/": "", "benchmarks/RESULTS.md": "results.md"}),
    "results.md": ("benchmarks/RESULTS.md", {"../docs/": ""}),
}
# pages under docs/ point at the results where they are in the repository
IN_DOCS = {"../benchmarks/RESULTS.md": "results.md"}
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _rewrite(markdown: str, prefixes: dict[str, str]) -> str:
    def target(match: re.Match) -> str:
        link = match.group(1)
        for old, new in prefixes.items():
            if link.startswith(old):
                return f"]({new}{link[len(old):]})"
        return match.group(0)
    return LINK.sub(target, markdown)


def on_files(files, config):
    for page, (source, prefixes) in GENERATED.items():
        text = _rewrite((ROOT / source).read_text(encoding="utf-8"), prefixes)
        files.append(File.generated(config, page, content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri in GENERATED:
        return markdown
    depth = page.file.src_uri.count("/")
    return _rewrite(markdown, {"../" * depth + old: "../" * depth + new for old, new in IN_DOCS.items()})


# -- the API reference ---------------------------------------------------------------------------------------------
# The docstrings cross-reference with Sphinx roles (:class:`Name`); the reference shows them as code.
try:
    import griffe
except ImportError:  # mkdocs itself loads this file; griffe comes with mkdocstrings
    griffe = None

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`~?([^`]+)`")

if griffe is not None:
    class SphinxRoles(griffe.Extension):
        """Rewrite ``:class:`X``` and its kin to ```X``` in every docstring the reference reads."""

        def on_object(self, *, obj, loader, **kwargs) -> None:
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
