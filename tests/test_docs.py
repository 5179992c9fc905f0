"""The documentation runs: every ```python block of README.md and docs/*.md is executed (each page's blocks in
order, in one namespace, in a temporary directory), unless the line before it is a marker saying why it cannot
run here, ``<!-- not-run: REASON -->``; the site builds with ``mkdocs build --strict``; and the models page's
parameter counts are counted again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass
class Block:
    page: Path
    line: int          # the first line of code, counted from 1
    language: str
    code: str
    not_run: str | None  # the marker's reason; None: the block runs


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the not-run marker on the line before each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.fullmatch(previous.strip())
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(opening.group(1))), len(lines))
        blocks.append(Block(page, i + 2, opening.group(2).lower(), "\n".join(lines[i + 1:end]) + "\n",
                            marker.group(1) if marker else None))
        i = end + 1
    return blocks


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_page_is_found_and_has_runnable_examples():
    names = [_name(p) for p in PAGES]
    assert "README.md" in names and "docs/models.md" in names and "docs/training.md" in names
    runnable = [b for p in PAGES for b in code_blocks(p) if b.language == "python" and b.not_run is None]
    assert len(runnable) >= 10, [f"{_name(b.page)}:{b.line}" for b in runnable]


def test_not_run_markers_give_a_reason_and_stand_before_a_python_block():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in NOT_RUN.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            assert len(match.group(1)) >= 10, f"{_name(page)}:{line}: a not-run marker without its reason"
        marked = sum(1 for b in code_blocks(page) if b.not_run is not None)
        assert marked == len(NOT_RUN.findall(text)), f"{_name(page)}: a not-run marker before no code block"
        assert all(b.language == "python" for b in code_blocks(page) if b.not_run is not None), \
            f"{_name(page)}: a not-run marker before a block that is not Python (only Python blocks are run)"


def test_blocks_are_read_with_the_page_s_line_numbers():
    """The extraction itself: each block starts at the page's own line, bash blocks are found but not run."""
    page = ROOT / "README.md"
    blocks = code_blocks(page)
    lines = page.read_text(encoding="utf-8").splitlines()
    for block in blocks:
        first = block.code.splitlines()[0] if block.code.strip() else ""
        assert lines[block.line - 1] == first
    assert any(b.language == "bash" and "resnets train resnet20" in b.code for b in blocks)


RUN_PAGES = [p for p in PAGES if any(b.language == "python" and b.not_run is None for b in code_blocks(p))]
# pages whose examples take over 10 s on a loaded 2-core CPU (marked slow): those that train a network
SLOW_PAGES = {"README.md", "docs/training.md"}


@pytest.mark.parametrize("page", [pytest.param(p, id=_name(p), marks=[pytest.mark.slow] if _name(p) in SLOW_PAGES
                                               else []) for p in RUN_PAGES])
def test_the_examples_of_a_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESNETS_OFFLINE", "1")     # an example that would download fails at once, naming it
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    for block in code_blocks(page):
        if block.language != "python" or block.not_run is not None:
            continue
        # padded so that a traceback's line numbers are the page's own
        code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
        try:
            exec(code, namespace)  # noqa: S102 (running the examples is the test)
        except Exception as error:  # the page and line of the failing example, then its traceback
            raise AssertionError(f"the example at {_name(page)}:{block.line} raised {error!r}") from error


def test_a_failing_example_names_its_page_and_line(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n<!-- not-run: needs a GPU to show -->\n```python\n"
                    "raise SystemExit\n```\n\n```python\ny = x + 1\nassert y == 3\n```\n")
    blocks = code_blocks(page)
    assert [b.not_run for b in blocks] == [None, "needs a GPU to show", None]
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match=r"page\.md:13 ") as failure:
        test_the_examples_of_a_page_run(page, tmp_path, monkeypatch)
    assert failure.value.__cause__.__traceback__.tb_next.tb_lineno == 14


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs", reason='the docs extra: pip install -e ".[docs]"')
    pytest.importorskip("mkdocstrings")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    site = tmp_path / "site"
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in ("resnets.create_model", "resnets.load_weights", "resnets.InferenceSession",
                 "resnets.train.TrainOptions", "resnets.transfer.finetune"):
        assert f'id="{name}"' in api, name
    assert ":class:" not in api and ":func:" not in api   # the docstrings' Sphinx roles shown as code
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'id="quick-start"' in home and 'href="models.html"' in home and 'href="docs/' not in home
    assert "Benchmark results" in (site / "results.html").read_text(encoding="utf-8")
    # nothing fetched when a page is read: no web fonts, no scripts or styles from elsewhere
    for html in site.rglob("*.html"):
        assert not re.search(r'(src|href)="https?://[^"]*\.(css|js|woff2?)"', html.read_text(encoding="utf-8")), html


def test_the_parameter_counts_on_the_models_page_are_the_models():
    """docs/models.md's table of parameters: each row is counted again (networks built on the meta device)."""
    import torch

    import resnets

    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+)([^|]*)\| ([\d,]+) \| [\d.]+ [MG] \|$", text, flags=re.MULTILINE)
    assert len(rows) >= 10, rows
    for name, extra, count in rows:
        options = dict(re.findall(r'(\w+)="(\w+)"', extra))
        with torch.device("meta"):
            model = resnets.create_model(name, **options)
        assert sum(p.numel() for p in model.parameters()) == int(count.replace(",", "")), (name, options)
