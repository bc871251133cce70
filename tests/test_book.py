"""``mrcnn-edu book``: the course rendered as static HTML (mrcnn_edu/book.py).

* A tiny fake course (stage 1: a lesson with relative links, an image and an equation, and a notebook that
  prints its environment and plots; stage 2: a notebook that raises) is built with ``fast=True``: the index
  lists stages 1..9 in order with links that resolve, the lesson is rendered with its links rewritten and its
  image copied, the notebook page embeds its figure as a data: URL and ran in notebooks/ with
  MRCNN_EDU_FAST=1, and the failing notebook is reported by name while every other page is still written.
* The real repository's lessons and notebooks are rendered without executing, through the CLI glue.
Executing needs nbconvert, nbclient, nbformat and ipykernel (the dev extra); the tests skip without them.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("nbconvert", reason="the book needs nbconvert (pip install nbconvert)")
pytest.importorskip("nbclient", reason="the book needs nbclient (pip install nbclient)")
pytest.importorskip("ipykernel", reason="executing notebooks needs a python3 kernel (pip install ipykernel)")

from mrcnn_edu import book  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# a 1 x 1 PNG: the lesson's figure, copied byte for byte
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
HREF = re.compile(r"<a\b[^>]*\shref=\"([^\"]*)\"")


def _notebook(*cells) -> str:
    """A notebook as nbformat 4 JSON; ``cells`` are ("markdown" | "code", source) pairs."""
    def cell(i, kind, source):
        extra = {"outputs": [], "execution_count": None} if kind == "code" else {}
        return {"id": f"cell-{i}", "cell_type": kind, "metadata": {}, "source": source, **extra}
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": [cell(i, *c) for i, c in enumerate(cells)],
                       "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                   "language": "python"}}})


def _fake_course(root: Path) -> Path:
    lesson = root / "lessons" / "01_first"
    lesson.mkdir(parents=True)
    (lesson / "figure.png").write_bytes(PIXEL)
    (root / "mrcnn_edu").mkdir()
    (root / "mrcnn_edu" / "boxes.py").write_text('"""a library file the lesson links to"""\n')
    (lesson / "README.md").write_text(
        "# Lesson 01: First things\n\n"
        "Run [the notebook](../../notebooks/01_first.ipynb#Plot), see [all lessons](../README.md) and "
        "[the code](../../mrcnn_edu/boxes.py).\n\n![the figure](figure.png)\n\n$$a^2 + b^2 = c^2$$\n\n"
        "## Tasks\n\n1. **Write** `box_area`.\n", encoding="utf-8")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "01_first.ipynb").write_text(_notebook(
        ("markdown", "# Stage 1 — First\n\nBack to [the lesson](../lessons/01_first/README.md)."),
        ("code", "import os\nprint('fast =', os.environ.get('MRCNN_EDU_FAST'), '| cwd =', os.path.basename(os.getcwd()))"),
        ("markdown", "## Plot"),
        ("code", "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()")), encoding="utf-8")
    (root / "notebooks" / "02_broken.ipynb").write_text(_notebook(
        ("markdown", "# Stage 2 — Broken"),
        ("code", "print('before the failure')"),
        ("code", "raise RuntimeError('planted failure')"),
        ("code", "print('never printed')")), encoding="utf-8")
    return root


def _links_resolve(out: Path):
    """Every relative href of every page names a file of the book (fragments and absolute URLs aside)."""
    for page in out.glob("*.html"):
        for href in HREF.findall(page.read_text(encoding="utf-8")):
            if href.startswith(("#", "http:", "https:", "data:", "mailto:")):
                continue
            assert (out / href.split("#")[0]).is_file(), f"{page.name}: the link {href!r} goes nowhere"


def _stage_numbers(index_html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="stage-(\d+)"', index_html)]


@pytest.fixture(scope="module")
def fake_book(tmp_path_factory):
    """Build the fake course once (two kernels start: the slow part); the tests read what it wrote."""
    root = _fake_course(tmp_path_factory.mktemp("course"))
    out = tmp_path_factory.mktemp("book") / "site"
    with pytest.raises(book.BookBuildError) as caught:
        book.build_book(out, root=root, fast=True, timeout=60, progress=False)
    return out, caught.value


def test_the_failing_notebook_is_reported_and_the_others_are_built(fake_book):
    out, err = fake_book
    assert list(err.result.failed) == ["02_broken"], err.result.failed
    why = err.result.failed["02_broken"]
    assert "cell 2" in why and "RuntimeError" in why and "planted failure" in why, why
    assert "02_broken" in str(err) and "1 of 2 notebooks" in str(err)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["assets", "index.html", "lesson-01_first.html", "notebook-01_first.html",
                     "notebook-02_broken.html", "style.css"], names  # no temporary files left behind
    broken = (out / "notebook-02_broken.html").read_text(encoding="utf-8")
    assert 'class="book-error"' in broken and "planted failure" in broken
    assert "before the failure" in broken
    assert broken.count("never printed") == 1  # only its source: the cell after the failure never ran
    index = (out / "index.html").read_text(encoding="utf-8")
    assert re.search(r'href="notebook-02_broken.html">Notebook</a> <span class="failed">', index)


def test_the_index_lists_the_nine_stages_in_order_with_working_links(fake_book):
    out, _ = fake_book
    index = (out / "index.html").read_text(encoding="utf-8")
    assert _stage_numbers(index) == list(range(1, 10))
    titles = re.findall(r"<h2>([^<]*)</h2>", index)
    assert titles == [book.STAGES[n][0] for n in range(1, 10)]
    stage1 = index.split('id="stage-1"')[1].split("</li>")[0]
    assert 'href="lesson-01_first.html"' in stage1 and 'href="notebook-01_first.html"' in stage1
    stage2 = index.split('id="stage-2"')[1].split("</li>")[0]
    assert "Lesson: not written yet" in stage2 and 'href="notebook-02_broken.html"' in stage2
    assert "MRCNN_EDU_FAST=1" in index
    _links_resolve(out)


def test_the_lesson_is_rendered_with_its_links_rewritten_and_its_image_copied(fake_book):
    out, err = fake_book
    page = (out / "lesson-01_first.html").read_text(encoding="utf-8")
    assert re.search(r"<h1[^>]*>Lesson 01: First things", page)
    assert "<strong>Write</strong> <code>box_area</code>" in page and "$$a^2 + b^2 = c^2$$" in page
    assert '<a href="notebook-01_first.html#Plot">the notebook</a>' in page
    assert '<a href="index.html">all lessons</a>' in page
    # the site does not hold the code: the link keeps its text and loses its target
    assert '<a class="repo-file" title="mrcnn_edu/boxes.py in the repository">the code</a>' in page
    assert '<img src="assets/lessons/01_first/figure.png" alt="the figure"' in page
    assert (out / "assets" / "lessons" / "01_first" / "figure.png").read_bytes() == PIXEL
    assert err.result.warnings == []


def test_the_notebook_ran_fast_in_its_folder_and_embeds_its_figure(fake_book):
    out, _ = fake_book
    page = (out / "notebook-01_first.html").read_text(encoding="utf-8")
    assert "fast = 1 | cwd = notebooks" in page
    assert re.search(r'<img[^>]*src="data:image/png;base64,[A-Za-z0-9+/]{100,}', page), "no embedded figure"
    assert '<nav class="book-nav"><a href="index.html">Course index</a>' in page
    assert '<a href="lesson-01_first.html">the lesson</a>' in page  # markdown cell's link, rewritten
    assert 'href="notebook-02_broken.html">stage 2 &rarr;</a>' in page


def test_the_kernel_gets_full_sizes_unless_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("MRCNN_EDU_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as tasks.py sets for pytest: it would hide the figures
    full, fast = book._kernel_env(tmp_path, fast=False), book._kernel_env(tmp_path, fast=True)
    assert "MRCNN_EDU_FAST" not in full and fast["MRCNN_EDU_FAST"] == "1"
    assert "MPLBACKEND" not in full and "MPLBACKEND" not in fast
    assert full["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)


def test_the_real_course_renders_through_the_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    book.add_arguments(parser.add_subparsers(dest="command").add_parser("book"))
    args = parser.parse_args(["book", "--out", str(tmp_path / "book"), "--no-execute", "--timeout", "30"])
    assert (args.no_execute, args.fast, args.timeout) == (True, False, 30)
    assert book.run_book(args) == 0
    out = tmp_path / "book"
    assert "open" in capsys.readouterr().out
    index = (out / "index.html").read_text(encoding="utf-8")
    assert _stage_numbers(index)[:9] == list(range(1, 10))
    lessons = sorted(ROOT.glob("lessons/[0-9][0-9]_*/README.md"))
    notebooks = sorted(ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"))
    assert len(lessons) >= 5 and len(notebooks) >= 5
    for readme in lessons:
        page = (out / f"lesson-{readme.parent.name}.html").read_text(encoding="utf-8")
        heading = readme.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        assert re.search(r"<h1[^>]*>" + re.escape(heading.split(":")[0]), page), readme
        assert f'href="lesson-{readme.parent.name}.html"' in index
    for nb in notebooks:
        assert (out / f"notebook-{nb.stem}.html").is_file() and f'href="notebook-{nb.stem}.html"' in index
    _links_resolve(out)


def test_the_cli_exits_1_naming_the_failed_notebooks(monkeypatch, tmp_path, capsys):
    def failing_build(*_, **__):
        result = book.BookResult(index=tmp_path / "index.html", failed={"03_rpn": "cell 4: ValueError: boom"})
        raise book.BookBuildError(result, total=5)

    monkeypatch.setattr(book, "build_book", failing_build)
    args = argparse.Namespace(out=str(tmp_path), fast=True, no_execute=False, timeout=600, source_url=None)
    assert book.run_book(args) == 1
    err = capsys.readouterr().err
    assert "1 notebook(s) failed" in err and "03_rpn: cell 4: ValueError: boom" in err


def test_find_stages_pairs_by_number_and_rejects_a_course_less_root(tmp_path):
    _fake_course(tmp_path / "c")
    stages = book.find_stages(tmp_path / "c")
    assert [s.number for s in stages] == list(range(1, 10))
    assert (stages[0].lesson_page, stages[0].notebook_page) == ("lesson-01_first.html", "notebook-01_first.html")
    assert (stages[1].lesson_page, stages[1].notebook_page) == (None, "notebook-02_broken.html")
    with pytest.raises(ValueError, match="root"):
        book.find_stages(tmp_path / "empty")


def test_links_to_the_code_go_to_source_url_when_given(tmp_path):
    root = _fake_course(tmp_path / "c")
    linker = book._Linker(root, tmp_path / "out", book.find_stages(root), "https://example.org/repo/blob/main/")
    page = linker.rewrite('<p><a href="../../mrcnn_edu/boxes.py#L3">code</a> <a href="#Tasks">here</a> '
                          '<a href="https://numpy.org">numpy</a> <a href="missing.md">gone</a></p>',
                          "lessons/01_first/README.md")
    assert page == ('<p><a href="https://example.org/repo/blob/main/mrcnn_edu/boxes.py#L3">code</a> '
                    '<a href="#Tasks">here</a> <a href="https://numpy.org">numpy</a> <a href="missing.md">gone</a></p>')
    assert linker.warnings == ["lessons/01_first/README.md: the link 'missing.md' points at "
                               "lessons/01_first/missing.md, which does not exist"]
