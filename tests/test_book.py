"""``mrcnn-edu book``: the course rendered as static HTML (mrcnn_edu/book.py).

* A tiny fake course (stage 1: a lesson with relative links, an image and an equation, and a notebook that
  prints its environment and plots; stage 2: a notebook that raises) is built with ``fast=True``: the index
  lists stages 1..9 in order with links that resolve, the lesson is rendered with its links rewritten and its
  image copied, the notebook page embeds its figure as a data: URL and ran in notebooks/ with
  MRCNN_EDU_FAST=1, and the failing notebook is reported by name while every other page is still written.
* The real repository's lessons and notebooks are rendered without executing, through the CLI glue.
* The site stands alone (no browser needed): every link and image of every page resolves to a file of the
  site (and a #fragment to an id of that page), no page loads a script, style or image from outside, every
  formula is MathML (no ``$...$`` left as text outside code), and a ``$`` in code stays code.
  A formula the converter cannot read is shown as TeX and reported; a tqdm bar is drawn as it ended, with no
  widget script.
* In a real browser, when Debian's ``chromium`` is installed (skipped otherwise): the fake course's lesson
  and notebook pages and the real lesson 04 load with no console message, their formulas are laid out as
  MathML (every fraction's numerator sits above its denominator) and every image has loaded.
Executing needs nbconvert, nbclient, nbformat, ipykernel and latex2mathml (the dev extra); the tests skip
without them.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("nbconvert", reason="the book needs nbconvert (pip install nbconvert)")
pytest.importorskip("nbclient", reason="the book needs nbclient (pip install nbclient)")
pytest.importorskip("ipykernel", reason="executing notebooks needs a python3 kernel (pip install ipykernel)")
pytest.importorskip("latex2mathml", reason="the book writes its formulas as MathML (pip install latex2mathml)")

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
        "Inline, $\\frac{a_1}{b_1} < 1$ holds when $a_1 * 2 < b_1 * 2$; code keeps `echo $HOME $PATH` as is.\n\n"
        "```bash\nexport PS1='$ '  # $ not math $\n```\n\n"
        "## Tasks\n\n1. **Write** `box_area`.\n", encoding="utf-8")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "01_first.ipynb").write_text(_notebook(
        ("markdown", "# Stage 1 — First\n\nBack to [the lesson](../lessons/01_first/README.md). A $7 \\times 7$ "
                     "grid, $x_{i} < y_{j}$ and $|x| \\le \\beta$; `cost = $5` is code.\n\n"
                     "$$\\mathrm{IoU} = \\frac{|A \\cap B|}{|A \\cup B|}$$"),
        ("code", "import os\nprint('fast =', os.environ.get('MRCNN_EDU_FAST'), '| cwd =', os.path.basename(os.getcwd()))"),
        ("markdown", "## Plot"),
        ("code", "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()")), encoding="utf-8")
    (root / "notebooks" / "02_broken.ipynb").write_text(_notebook(
        ("markdown", "# Stage 2 — Broken"),
        ("code", "print('before the failure')"),
        ("code", "raise RuntimeError('planted failure')"),
        ("code", "print('never printed')")), encoding="utf-8")
    return root


# text inside these is code or already typeset: a "$" there is not a formula left behind
_NOT_PROSE = {"code", "pre", "kbd", "samp", "script", "style", "textarea", "math"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_LEFT_TEX = re.compile(r"\$\$.+?\$\$|\$[^\s$][^$]*?\$|\\\(.+?\\\)|\\\[.+?\\\]", re.S)


class _Page(HTMLParser):
    """What a page of the book asks of the site: the URLs it links to or loads, its ids, its prose, and
    the ``<math>`` elements it holds."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.loads, self.ids, self.prose, self.math = [], [], set(), [], 0
        self.inline_scripts, self.styles = [], []
        self._skip = []  # the open elements whose text is not prose

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "script", "iframe", "source", "audio", "video", "embed") and attrs.get("src"):
            self.loads.append((tag, attrs["src"]))
        if tag == "link" and attrs.get("href"):
            self.loads.append((f"link rel={attrs.get('rel')}", attrs["href"]))
        self.math += tag == "math"
        if tag in _NOT_PROSE and tag not in _VOID:
            self._skip.append(tag)
        if tag == "script" and not attrs.get("src"):
            self.inline_scripts.append("")

    def handle_endtag(self, tag):
        if tag in self._skip:
            while self._skip and self._skip.pop() != tag:
                pass

    def handle_data(self, data):
        if self._skip and self._skip[-1] == "script" and self.inline_scripts:
            self.inline_scripts[-1] += data
        elif self._skip and self._skip[-1] == "style":
            self.styles.append(data)
        elif not self._skip:
            self.prose.append(data)


def _read_site(out: Path) -> dict:
    pages = {}
    for page in sorted(out.glob("*.html")):
        parser = _Page()
        parser.feed(page.read_text(encoding="utf-8"))
        pages[page.name] = parser
    return pages


def _external(url: str) -> bool:
    return bool(urlsplit(url).scheme not in ("", "data") or url.startswith("//"))


def _site_problems(out: Path) -> list[str]:
    """Everything that would break the site opened from a folder with no network: a link or image that names
    no file of the site (or a #fragment that names no id of its page), a script, style sheet, font or image
    loaded from outside, and a formula left as ``$...$`` text outside code."""
    problems, pages = [], _read_site(out)
    for name, page in pages.items():
        for url in page.links + [url for _, url in page.loads]:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue  # an outside link (allowed for <a>; loads are checked below), data: or mailto:
            target = unquote(parts.path) or name
            if not (out / target).is_file():
                problems.append(f"{name}: {url!r} names no file of the site")
            # a fragment is looked up as a browser does: as written, then percent-decoded
            elif parts.fragment and target in pages and not {parts.fragment, unquote(parts.fragment)} & \
                    pages[target].ids:
                problems.append(f"{name}: {url!r}: {target} has no element with that id")
        for kind, url in page.loads:
            if _external(url):
                problems.append(f"{name}: <{kind}> loads {url!r} from outside the site")
        for script in page.inline_scripts:
            for url in re.findall(r"""https?://[^\s"'`)]+|(?<=["'`])//[\w-]+\.[\w.-]+[^\s"'`)]*""", script):
                problems.append(f"{name}: an inline script fetches {url!r}")
        for style in page.styles:
            style = re.sub(r"/\*.*?\*/", "", style, flags=re.S)  # comments may name a URL, harmlessly
            for url in re.findall(r"""(?:url\(\s*['"]?|@import\s+['"])((?:https?:)?//[^'")\s]+)""", style):
                problems.append(f"{name}: a style sheet loads {url!r} from outside the site")
        text = re.sub(r"\s+", " ", "".join(page.prose))
        for tex in _LEFT_TEX.findall(text):
            problems.append(f"{name}: the formula {tex!r} is left as text")
    return problems


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
    assert _site_problems(out) == []


def test_the_lesson_is_rendered_with_its_links_rewritten_and_its_image_copied(fake_book):
    out, err = fake_book
    page = (out / "lesson-01_first.html").read_text(encoding="utf-8")
    assert re.search(r"<h1[^>]*>Lesson 01: First things", page)
    assert "<strong>Write</strong> <code>box_area</code>" in page
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
    printed = capsys.readouterr()
    assert "open" in printed.out
    assert "formula" not in printed.err, printed.err  # every formula of the course converts
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
    assert _site_problems(out) == []


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


def test_a_chapter_after_the_lecture_is_listed_with_its_own_title_only_when_it_is_there(tmp_path):
    root = _fake_course(tmp_path / "c")
    assert [s.number for s in book.find_stages(root)] == list(range(1, 10))
    (root / "notebooks" / "10_inspect.ipynb").write_text(_notebook(("markdown", "# Inside")))
    stages = book.find_stages(root)
    assert [s.number for s in stages] == list(range(1, 11))
    assert (stages[-1].title, stages[-1].notebook_page) == (book.AFTER_THE_LECTURE[10][0], "notebook-10_inspect.html")


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


# ----------------------------------------------------------------------------------------------------------
# formulas, and a site that needs no network
# ----------------------------------------------------------------------------------------------------------

def _formulas(page: str) -> dict:
    """TeX -> the display attribute of its <math>, for every formula of the page (its TeX is its annotation)."""
    found = re.findall(r'<math\b[^>]*\bdisplay="(\w+)"[^>]*>.*?<annotation encoding="application/x-tex">(.*?)'
                       r"</annotation>", page, flags=re.S)
    return {html.unescape(tex): display for display, tex in found}


def test_the_lessons_formulas_are_mathml_and_code_keeps_its_dollars(fake_book):
    out, _ = fake_book
    page = (out / "lesson-01_first.html").read_text(encoding="utf-8")
    assert _formulas(page) == {"a^2 + b^2 = c^2": "block", r"\frac{a_1}{b_1} < 1": "inline",
                               "a_1 * 2 < b_1 * 2": "inline"}, _formulas(page)
    assert "<mfrac>" in page and "<msup>" in page
    assert "$" not in re.sub(r"<code>[^<]*</code>|<pre>.*?</pre>", "", page, flags=re.S)
    assert "<code>echo $HOME $PATH</code>" in page  # a code span is code, not a formula
    assert "'$ '</span>" in page and "# $ not math $" in page  # nor is a code block (highlighted)
    assert "<em>" not in page  # the * and _ of a formula are not emphasis
    assert "mathjax" not in page.lower() and "<script" not in page


def test_the_notebooks_formulas_are_mathml(fake_book):
    out, _ = fake_book
    page = (out / "notebook-01_first.html").read_text(encoding="utf-8")
    assert _formulas(page) == {r"7 \times 7": "inline", "x_{i} < y_{j}": "inline", r"|x| \le \beta": "inline",
                               r"\mathrm{IoU} = \frac{|A \cap B|}{|A \cup B|}": "block"}, _formulas(page)
    assert "<code>cost = $5</code>" in page
    assert "mathjax" not in page.lower() and "<script" not in page  # nor require.js, mermaid or widgets


def test_the_site_stands_alone(fake_book):
    out, _ = fake_book
    assert _site_problems(out) == []
    # the checker itself catches each kind of problem
    (out / "planted.html").write_text(
        '<link rel="stylesheet" href="https://cdn.example.org/x.css"><script src="//cdn.example.org/x.js"></script>'
        '<style>@import "https://fonts.example.org/f.css";</style><p>$x^2$ and \\(y\\) <code>$ok$</code></p>'
        '<a href="lesson-01_first.html#no-such-id">a</a> <a href="gone.html">b</a> <img src="assets/none.png">',
        encoding="utf-8")
    try:
        problems = _site_problems(out)
    finally:
        (out / "planted.html").unlink()
    assert problems == [
        "planted.html: 'lesson-01_first.html#no-such-id': lesson-01_first.html has no element with that id",
        "planted.html: 'gone.html' names no file of the site",
        "planted.html: 'assets/none.png' names no file of the site",
        "planted.html: <link rel=stylesheet> loads 'https://cdn.example.org/x.css' from outside the site",
        "planted.html: <script> loads '//cdn.example.org/x.js' from outside the site",
        "planted.html: a style sheet loads 'https://fonts.example.org/f.css' from outside the site",
        "planted.html: the formula '$x^2$' is left as text",
        "planted.html: the formula '\\\\(y\\\\)' is left as text"], problems


def test_formulas_the_converter_cannot_read_show_as_tex_and_are_reported(tmp_path):
    from mrcnn_edu import _mathml

    out, problem = _mathml.tex_to_mathml(r"\frac{a", display=True)
    assert out == '<span class="math-display"><code class="tex-error">\\frac{a</code></span>' and "mfrac" in problem
    out, problem = _mathml.tex_to_mathml(r"x \notacommand y")
    assert out == r'<code class="tex-error">x \notacommand y</code>' and r"\notacommand" in problem
    # latex2mathml writes \big\lfloor as the text "\lfloor", and \log flush against its argument
    out, problem = _mathml.tex_to_mathml(r"\big\lfloor t \log s \big\rfloor + \log(x)")
    assert problem is None and "\\lfloor</mo>" not in out and "&#x0230A;" in out
    assert '<mi>t</mi><mspace width="0.167em" /><mi>log</mi><mspace width="0.167em" /><mi>s</mi>' in out
    assert "<mi>log</mi><mo" in out  # no space before a bracket, as TeX
    out, _ = _mathml.tex_to_mathml(r"\max(|x|, 0)")
    assert '<mo lspace="0.167em" rspace="0">max</mo>' in out and out.count('<mo lspace="0" rspace="0"') == 2
    assert _mathml.split_display(r"a = 1, \qquad b = \begin{cases} 1 \qquad 2 \end{cases} \qquad {c \qquad d}") == \
        ["a = 1,", r"b = \begin{cases} 1 \qquad 2 \end{cases}", r"{c \qquad d}"]
    root = _fake_course(tmp_path / "c")
    readme = root / "lessons" / "01_first" / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nBroken: $\\frac{a$.\n", encoding="utf-8")
    result = book.build_book(tmp_path / "site", root=root, execute=False, progress=False)
    assert [w for w in result.warnings if "formula" in w] == \
        ["lessons/01_first/README.md: the formula '\\\\frac{a': <mfrac> with 1 parts instead of 2 (a missing brace?)"]


def test_a_tqdm_bar_is_drawn_as_it_ended_without_the_widget_script():
    import nbformat

    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    # what nbclient saves of tqdm.auto's bar in a notebook: an HBox of an HTML, a FloatProgress and an HTML
    models = {"box": model("HBoxModel", children=["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"]),
              "left": model("HTMLModel", value="training: 100%"),
              "bar": model("FloatProgressModel", value=50.0, min=0.0, max=50.0, bar_style="success"),
              "right": model("HTMLModel", value="50/50 [00:00&lt;00:00]"),
              "other": model("SliderModel", value=3)}
    nb = nbformat.v4.new_notebook(metadata={"widgets": {book.WIDGET_STATE: {"state": models, "version_major": 2}}})
    nb.cells.append(nbformat.v4.new_code_cell("train()", outputs=[
        nbformat.v4.new_output("display_data", data={book.WIDGET_VIEW: {"model_id": "box"},
                                                     "text/plain": "training:   0%|          | 0/50"}),
        nbformat.v4.new_output("display_data", data={book.WIDGET_VIEW: {"model_id": "other"},
                                                     "text/plain": "Slider(value=3)"})]))
    book._freeze_widgets(nb)
    assert "widgets" not in nb.metadata
    bar, other = nb.cells[0].outputs
    assert bar.data == {"text/plain": "training:   0%|          | 0/50", "text/html":
                        '<span class="book-widget"><span>training: 100%</span><progress class="success" '
                        'value="50.0" max="50.0"></progress><span>50/50 [00:00&lt;00:00]</span></span>'}
    assert other.data == {"text/plain": "Slider(value=3)"}  # a widget it does not draw keeps its text


# ----------------------------------------------------------------------------------------------------------
# in a real browser
# ----------------------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")  # Debian's package (apt-get install chromium)

# appended to a copy of a page: once everything has loaded, it writes what the browser made of the page into
# an attribute that --dump-dom prints. A fraction the browser typeset has its numerator above its denominator.
PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => e.getBoundingClientRect();
  const fractions = [...document.querySelectorAll("mfrac")];
  const stacked = fractions.filter(f => f.children.length === 2 &&
                                        box(f.children[0]).bottom <= box(f.children[1]).top + 0.5);
  const images = [...document.images];
  document.body.dataset.probe = JSON.stringify({
    formulas: document.querySelectorAll("math").length, fractions: fractions.length, stacked: stacked.length,
    images: images.length, broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)});
});
</script>
"""


def _in_chromium(page: Path, profile: Path) -> tuple[dict, list[str]]:
    """Open ``page`` in headless Chromium; returns what the probe saw and the console's messages."""
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom",
                              probe.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', run.stdout)
    assert found, f"{page.name}: the probe did not run (exit {run.returncode}): {run.stderr[-2000:]}"
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_pages_typeset_their_formulas_in_chromium(fake_book, tmp_path):
    out, _ = fake_book
    real = tmp_path / "real"
    with contextlib.redirect_stderr(io.StringIO()):
        book.build_book(real, root=ROOT, execute=False, progress=False)
    roi = max(ROOT.glob("lessons/04_*/README.md"))
    pages = [out / "lesson-01_first.html", out / "notebook-01_first.html", real / f"lesson-{roi.parent.name}.html"]
    seen = {}
    for page in pages:
        seen[page.name], console = _in_chromium(page, tmp_path / "profile")
        assert console == [], f"{page.name}: {console}"
    for name, what in seen.items():
        assert what["formulas"] >= 3 and what["fractions"] >= 1, (name, what)
        assert what["stacked"] == what["fractions"], f"{name}: fractions not typeset: {what}"
        assert what["broken"] == [], f"{name}: images that did not load: {what['broken']}"
    assert seen["lesson-01_first.html"]["images"] == 1  # the PNG copied into assets/
    assert seen["notebook-01_first.html"]["images"] >= 1  # the embedded figure
    assert seen[pages[2].name]["fractions"] >= 5
