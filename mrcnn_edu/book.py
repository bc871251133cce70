"""The course as a static web site: ``mrcnn-edu book`` executes the notebooks and renders them with the lessons.

    build/book/index.html                 the nine stages of the lecture in order, each with its lesson and notebook,
                                          then the chapters after the lecture (10: inside the trained model)
    build/book/lesson-NN_<stage>.html     lessons/NN_<stage>/README.md, rendered
    build/book/notebook-NN_<stage>.html   notebooks/NN_<stage>.ipynb, executed, figures embedded as data: URLs
    build/book/assets/...                 the images the lessons show, copied at their repository paths
    build/book/style.css

Every notebook runs in a fresh ``python3`` kernel (nbclient) with ``notebooks/`` as working directory, at full
size unless ``fast`` (``MRCNN_EDU_FAST=1``, as the test suite runs them). A notebook that fails still gets its
page, with the error at the top and the traceback under the cell that raised; the others are built, the index
marks it, and ``build_book`` then raises ``BookBuildError`` naming every failure. Each page is written to a
temporary file and renamed into place, and the index comes last, so an interrupted build never leaves a
half-written index.

Every formula (``$...$``, ``$$...$$``) of a lesson or a notebook's Markdown is written as MathML when the page is
built (``_mathml.py``), so the site typesets them with no script, no font to fetch and no network; a formula that
cannot be converted shows as TeX and is reported among the warnings. No page loads anything from outside:
nbconvert's MathJax, require.js and widget scripts are left out of the notebook pages, and a widget (tqdm's bar)
is drawn as its saved state left it, in plain HTML.

Links between the course's files are rewritten to the pages (``../../notebooks/04_roi.ipynb`` becomes
``notebook-04_roi.html``, ``../README.md`` the index); a link to another file of the repository goes to
``source_url`` when one is given (say ``https://github.com/<owner>/mrcnn-edu/blob/main``) and otherwise keeps
its text without the link, because the published site does not hold the code.

Host-only: files and HTML, no arrays. Needs nbconvert (>= 7), nbclient, nbformat, ipykernel and latex2mathml (the
dev extra).
"""
from __future__ import annotations

import html
import os
import posixpath
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

__all__ = ["STAGES", "BookBuildError", "BookResult", "HELP", "add_arguments", "build_book", "find_stages",
           "run_book"]

ROOT = Path(__file__).resolve().parents[1]

# The stage map of the lecture (shared/design.md): number -> (short title, lecture topic).
STAGES = {
    1: ("IoU, box coding and NMS", "IoU, box encoding and decoding, NMS"),
    2: ("Anchors", "anchors: k = 3 scales x 3 ratios at every cell of the stride-16 grid; 800x600 gives 1900 "
                   "cells, 17100 anchors"),
    3: ("The Region Proposal Network", "RPN: object = IoU > 0.7 or best match, not object = IoU < 0.3, 256 "
                                       "anchors a mini-batch, multi-task loss, proposals (decode, clip, NMS)"),
    4: ("RoIPool and RoIAlign", "RoIPool (quantized bins + max) vs RoIAlign (bilinear samples, no quantization), "
                                "forward and backward, on the lecture's 8x8 example"),
    5: ("Losses", "losses: smooth-L1, softmax cross-entropy, per-class sigmoid mask loss (and the softmax mask "
                  "loss it replaced)"),
    6: ("Layers with hand-written backward", "layers with hand-written backward: conv (im2col + GEMM), ReLU, "
                                             "max-pool, linear, normalization, transposed conv; gradient check; "
                                             "SGD and Adam"),
    7: ("Heads", "heads: box head (K+1 softmax, 4K deltas), mask head (small FCN, K masks of m x m), paste-back "
                 "into the image"),
    8: ("The whole model", "the whole model: backbone (+ optional FPN), RPN, RoIAlign, heads; training on shapes; "
                           "inference"),
    9: ("Evaluation and visualization", "evaluation (COCO AP, box and mask) and visualization"),
}
# Chapters after the lecture: listed in the book only when their lesson or notebook is there.
AFTER_THE_LECTURE = {
    10: ("Inside the trained model", "the trained model opened up: every stage on one image, activations and "
                                     "weights, which stage loses the AP, one detection explained by its gradient"),
}

NAME = re.compile(r"^(\d\d)_[A-Za-z0-9_]+$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # IPython colours its tracebacks
# nbconvert's lab page without its scripts from a CDN: require.js, MathJax, mermaid and the widget manager
NOTEBOOK_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

CSS = """\
body.book { max-width: 52rem; margin: 0 auto; padding: 0 1.2rem 3rem; font: 16px/1.55 system-ui, sans-serif;
            color: #1d1d1f; }
body.book pre, body.book code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em; }
body.book pre { background: #f5f5f7; padding: 0.7rem 0.9rem; overflow-x: auto; border-radius: 4px; }
body.book table { border-collapse: collapse; margin: 1rem 0; }
body.book th, body.book td { border: 1px solid #d2d2d7; padding: 0.25rem 0.6rem; text-align: left; }
body.book img { max-width: 100%; }
body.book a.anchor-link { visibility: hidden; margin-left: 0.3em; text-decoration: none; }
body.book h1:hover a.anchor-link, body.book h2:hover a.anchor-link, body.book h3:hover a.anchor-link
    { visibility: visible; }
.book-nav { font: 14px/1.5 system-ui, sans-serif; margin: 0 auto; padding: 0.6rem 1.2rem; max-width: 64rem;
            border-bottom: 1px solid #d2d2d7; }
.book-nav a { margin-right: 1.2rem; color: #0645ad; text-decoration: underline; }
.book-error { font: 15px/1.5 system-ui, sans-serif; max-width: 64rem; margin: 0.8rem auto; padding: 0.6rem 1rem;
              background: #fdecea; border: 1px solid #e0a39a; border-radius: 4px; color: #611a15; }
.book-error pre { white-space: pre-wrap; margin: 0.3rem 0 0; }
ol.stages { list-style: none; padding: 0; }
ol.stages li { margin: 1.1rem 0; padding-left: 3rem; position: relative; }
ol.stages .num { position: absolute; left: 0; top: 0.1rem; font-size: 1.6rem; font-weight: 600; color: #6e6e73; }
ol.stages h2 { font-size: 1.2rem; margin: 0; }
ol.stages .topic { margin: 0.1rem 0 0.3rem; color: #424245; }
ol.stages a { margin-right: 1.2rem; }
.missing { color: #86868b; }
.failed { color: #b3261e; font-weight: 600; }
a.repo-file { color: inherit; }
math { font-family: "Latin Modern Math", "STIX Two Math", "Cambria Math", "DejaVu Math TeX Gyre",
       "Libertinus Math", "TeX Gyre Termes Math", math; font-size: 1.05em; }
math[display="block"] { margin: 0.8rem 0; overflow-x: auto; overflow-y: hidden; }
.math-display { display: flex; flex-wrap: wrap; justify-content: center; align-items: baseline; column-gap: 2em;
                margin: 0.8rem 0; }
.math-display > math[display="block"] { margin: 0.2rem 0; max-width: 100%; }
code.tex-error { color: #b3261e; }
.book-widget { display: inline-flex; align-items: center; gap: 0.4em; font: 13px/1.4 ui-monospace, monospace; }
.book-widget progress { width: 16em; }
.book-widget progress.success { accent-color: #2e7d32; }
.book-widget progress.danger { accent-color: #c62828; }
.book-widget progress.warning { accent-color: #ef6c00; }
"""


# ----------------------------------------------------------------------------------------------------------
# what the course holds
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Stage:
    """One stage of the lecture: its number, titles, and its lesson README and notebook (either may be None)."""
    number: int
    title: str
    topic: str
    lesson: Path | None = None      # lessons/NN_<stage>/README.md
    notebook: Path | None = None    # notebooks/NN_<stage>.ipynb

    @property
    def lesson_page(self) -> str | None:
        return f"lesson-{self.lesson.parent.name}.html" if self.lesson else None

    @property
    def notebook_page(self) -> str | None:
        return f"notebook-{self.notebook.stem}.html" if self.notebook else None

    @property
    def first_page(self) -> str | None:
        return self.lesson_page or self.notebook_page


@dataclass
class BookResult:
    """What ``build_book`` wrote: the index, every page, the notebooks that failed (name -> why), and warnings."""
    index: Path
    pages: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


class BookBuildError(RuntimeError):
    """Some notebooks failed to execute; the book was still written (``result``), their pages show the error."""

    def __init__(self, result: BookResult, total: int):
        self.result = result
        why = "; ".join(f"{name}: {reason}" for name, reason in result.failed.items())
        super().__init__(f"{len(result.failed)} of {total} notebooks failed to execute ({why}); the book is "
                         f"written anyway, their pages show the error: {result.index}")


def find_stages(root=ROOT) -> list[Stage]:
    """The stages 1..9 of the lecture (and any later one found, ``AFTER_THE_LECTURE`` naming it), each paired
    with what exists of its lesson (``lessons/NN_*/README.md``) and notebook (``notebooks/NN_*.ipynb``);
    ValueError on two for one stage."""
    root = Path(root)
    if not (root / "lessons").is_dir() and not (root / "notebooks").is_dir():
        raise ValueError(f"root: {root} has neither lessons/ nor notebooks/ (is it the mrcnn-edu repository?)")
    stages = {n: Stage(n, *STAGES[n]) for n in STAGES}
    found = [("lesson", p, p.parent.name) for p in (root / "lessons").glob("[0-9][0-9]_*/README.md")]
    found += [("notebook", p, p.stem) for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb")]
    for kind, path, name in sorted(found, key=lambda f: str(f[1])):
        match = NAME.match(name)
        if not match:
            continue  # not a stage (a scratch copy, say)
        number = int(match.group(1))
        stage = stages.setdefault(number, Stage(number, *AFTER_THE_LECTURE.get(number, (f"Stage {number}", ""))))
        if getattr(stage, kind) is not None:
            raise ValueError(f"root: stage {number} has two {kind}s: {getattr(stage, kind)} and {path}")
        setattr(stage, kind, path)
    return [stages[n] for n in sorted(stages)]


# ----------------------------------------------------------------------------------------------------------
# links
# ----------------------------------------------------------------------------------------------------------

class _Linker:
    """Rewrites the relative ``href`` / ``src`` of a page's ``<a>`` and ``<img>`` tags, which were written
    relative to the source file in the repository, so that they work in the flat folder of the book."""

    def __init__(self, root: Path, out: Path, stages: list[Stage], source_url: str | None):
        self.root, self.out, self.source_url = root, out, (source_url or "").rstrip("/") or None
        self.pages = {"lessons": "index.html", "notebooks": "index.html", "lessons/README.md": "index.html",
                      "notebooks/README.md": "index.html"}
        for s in stages:
            if s.lesson:
                folder = s.lesson.parent.relative_to(root).as_posix()
                self.pages[folder] = self.pages[f"{folder}/README.md"] = s.lesson_page
            if s.notebook:
                self.pages[s.notebook.relative_to(root).as_posix()] = s.notebook_page
        self.warnings = []

    def rewrite(self, text: str, source: str) -> str:
        """``text``: the page's HTML; ``source``: the repository path of the file it was made from."""
        folder = posixpath.dirname(source)
        return re.sub(r"<(a|img)\b[^>]*>", lambda m: self._tag(m.group(0), m.group(1), folder, source), text)

    def _tag(self, tag: str, name: str, folder: str, source: str) -> str:
        attr = "href" if name == "a" else "src"
        m = re.search(rf"\s{attr}\s*=\s*(\"[^\"]*\"|'[^']*')", tag)
        if not m:
            return tag
        url = html.unescape(m.group(1)[1:-1])
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
            return tag  # absolute, data:, or a #fragment of this page
        target = posixpath.normpath(posixpath.join(folder, unquote(parts.path)))
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        if target.startswith("../") or target == "..":
            self.warnings.append(f"{source}: the link {url!r} leaves the repository; left as it is")
            return tag
        new = self._target(target, fragment, source, url)
        if new is None:  # a repository file the site does not hold: keep the text, drop the link
            return tag[:m.start()] + f' class="repo-file" title="{html.escape(target)} in the repository"' + \
                tag[m.end():]
        return tag[:m.start()] + f' {attr}="{html.escape(new)}"' + tag[m.end():]

    def _target(self, target: str, fragment: str, source: str, url: str) -> str | None:
        if target in self.pages:
            return self.pages[target] + fragment
        path = self.root / target
        if not path.exists():
            self.warnings.append(f"{source}: the link {url!r} points at {target}, which does not exist")
            return url
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            copy = self.out / "assets" / target
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            return f"assets/{quote(target)}"
        return f"{self.source_url}/{quote(target)}{fragment}" if self.source_url else None


# ----------------------------------------------------------------------------------------------------------
# pages
# ----------------------------------------------------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it: a reader never sees half a page."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _heading(markdown: str, default: str) -> str:
    """The text of the first ``# `` heading, without Markdown's backticks and emphasis."""
    m = re.search(r"^#\s+(.+?)\s*#*\s*$", markdown, flags=re.M)
    return re.sub(r"[`*_]", "", m.group(1)) if m else default


def _nav(stages: list[Stage], stage: Stage) -> str:
    """The bar at the top of a page: the index, this stage's two pages, the previous and next stage."""
    built = [s for s in stages if s.first_page]
    i = built.index(stage)
    links = ['<a href="index.html">Course index</a>']
    if stage.lesson_page:
        links.append(f'<a href="{stage.lesson_page}">Stage {stage.number} lesson</a>')
    if stage.notebook_page:
        links.append(f'<a href="{stage.notebook_page}">Stage {stage.number} notebook</a>')
    if i > 0:
        links.append(f'<a href="{built[i - 1].first_page}">&larr; stage {built[i - 1].number}</a>')
    if i + 1 < len(built):
        links.append(f'<a href="{built[i + 1].first_page}">stage {built[i + 1].number} &rarr;</a>')
    return f'<nav class="book-nav">{" ".join(links)}</nav>\n'


def _html_page(title: str, body: str) -> str:
    """A page of the book in its own style (its formulas are MathML already: no script)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{html.escape(title)}</title>\n<link rel="stylesheet" href="style.css">\n</head>\n'
            f'<body class="book">\n{body}\n</body>\n</html>\n')


def _lesson_html(stage: Stage, stages: list[Stage], linker: _Linker, root: Path) -> str:
    from ._mathml import markdown_to_html

    markdown = stage.lesson.read_text(encoding="utf-8")
    title = _heading(markdown, f"Lesson {stage.number:02d}")
    source = stage.lesson.relative_to(root).as_posix()
    problems = []
    body = linker.rewrite(markdown_to_html(markdown, problems), source)
    linker.warnings += [f"{source}: {p}" for p in problems]
    return _html_page(f"{title} | mrcnn-edu", _nav(stages, stage) + f"<main>\n{body}\n</main>")


def _exporter():
    """nbconvert's HTML exporter (lab template, figures embedded) whose Markdown cells get MathML formulas and
    whose page loads no script from outside; ``exporter.problems`` collects the formulas it could not convert."""
    import jinja2
    from nbconvert import HTMLExporter

    from ._mathml import markdown_to_html

    class BookExporter(HTMLExporter):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.problems = []

        @jinja2.pass_context
        def markdown2html(self, context, source):
            # as HTMLExporter.markdown2html, with the renderer that writes MathML
            cell = context.get("cell", {})
            # traits of later nbconvert 7 releases, passed on only where the exporter has them
            options = {name: getattr(self, name) for name in ("exclude_anchor_links",) if hasattr(self, name)}
            options.update(getattr(self, "lexer_options", {}))
            return markdown_to_html(source, self.problems, attachments=cell.get("attachments", {}),
                                    embed_images=self.embed_images,
                                    path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                                    anchor_link_text=self.anchor_link_text, **options)

    exporter = BookExporter(template_name="lab", embed_images=True)
    exporter.raw_template = NOTEBOOK_TEMPLATE
    return exporter


def _widget_html(model_id: str, models: dict, depth: int = 0) -> str | None:
    """A still of widget ``model_id`` as its saved state left it (boxes, HTML and labels, progress bars: what a
    tqdm bar is made of), or None for a kind of widget this does not draw."""
    model = models.get(model_id.removeprefix("IPY_MODEL_")) if depth < 20 else None
    name, state = (model.get("model_name", ""), model.get("state", {})) if model else ("", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        parts = [_widget_html(child, models, depth + 1) for child in state.get("children", [])]
        tag = "div" if name == "VBoxModel" else "span"
        return None if None in parts else f'<{tag} class="book-widget">{"".join(parts)}</{tag}>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{state.get('value', '')}</span>"
    if name == "LabelModel":
        return f"<span>{html.escape(str(state.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        low = state.get("min", 0) or 0
        value, high = state.get("value", low) - low, state.get("max", 100) - low
        style = html.escape(state.get("bar_style") or "")
        return f'<progress class="{style}" value="{value}" max="{high}"></progress>'
    return None


def _freeze_widgets(nb) -> None:
    """A widget view needs the widget manager's script from a CDN, and its text is the widget as it was first
    shown (a tqdm bar at 0%): draw it instead as its saved state left it (the bar at the end), else keep the
    text; then drop the views and the saved state."""
    models = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                still = _widget_html(str(data.pop(WIDGET_VIEW).get("model_id", "")), models)
                if still:
                    data["text/html"] = still
                data.setdefault("text/plain", "")


def _kernel_env(root: Path, fast: bool) -> dict:
    """The kernel's environment: this checkout's mrcnn_edu first on the path, the size switch as asked, and
    matplotlib's inline backend (an ``MPLBACKEND=Agg`` left by a test runner would hide every figure)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env.pop("MRCNN_EDU_FAST", None)
    env.pop("MPLBACKEND", None)
    if fast:
        env["MRCNN_EDU_FAST"] = "1"
    return env


def _execute(nb, folder: Path, timeout: int, env: dict) -> str | None:
    """Run ``nb`` in place top to bottom; None when it ran, else one line saying which cell failed and why."""
    import nbclient

    started = {"index": None}

    def on_cell_start(cell, cell_index, **_):
        started["index"] = cell_index

    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout, on_cell_start=on_cell_start,
                                     resources={"metadata": {"path": str(folder)}})
    try:
        client.execute(env=env)
    except Exception as err:  # CellExecutionError, CellTimeoutError, DeadKernelError, no kernel, ...
        where = "before any cell ran" if started["index"] is None else f"cell {started['index']}"
        if isinstance(err, TimeoutError):
            return f"{where} ran over the {timeout} s limit of a cell"
        if getattr(err, "ename", None):
            return f"{where}: {err.ename}: {ANSI.sub('', str(err.evalue))}"
        lines = ANSI.sub("", str(err)).strip().splitlines()
        return f"{where}: {type(err).__name__}" + (f": {lines[-1]}" if lines else "")
    return None


def _notebook_html(stage: Stage, stages: list[Stage], linker: _Linker, root: Path, exporter, *,
                   execute: bool, timeout: int, env: dict) -> tuple[str, str | None]:
    """The notebook's page (executed when ``execute``) and None, or the page with its error and the error."""
    import nbformat

    nb = nbformat.read(stage.notebook, as_version=4)
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title = _heading(first, stage.notebook.stem)
    error = _execute(nb, stage.notebook.parent, timeout, env) if execute else None
    _freeze_widgets(nb)
    source = stage.notebook.relative_to(root).as_posix()
    exporter.problems.clear()
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": f"{title} | mrcnn-edu",
                                                                      "path": str(stage.notebook.parent)}})
    linker.warnings += [f"{source}: {p}" for p in exporter.problems]
    body = linker.rewrite(body, source)  # before the nav goes in
    top = _nav(stages, stage)
    if error:
        top += (f'<div class="book-error"><strong>This notebook failed to execute</strong>; its outputs stop '
                f'where it failed (a traceback shows under the cell that raised).<pre>{html.escape(error)}</pre></div>\n')
    body = re.sub(r"</head>", '<link rel="stylesheet" href="style.css">\n</head>', body, count=1)
    body = re.sub(r"<body[^>]*>", lambda m: m.group(0) + "\n" + top, body, count=1)
    return body, error


def _index_html(stages: list[Stage], failed: dict, mode: str) -> str:
    """The course in stage order: number, title, lecture topic, links to the lesson and the notebook."""
    items = []
    for s in stages:
        links = []
        for label, page, path in (("Lesson", s.lesson_page, s.lesson), ("Notebook", s.notebook_page, s.notebook)):
            if page:
                bad = path.stem in failed if label == "Notebook" else False
                links.append(f'<a href="{page}">{label}</a>' + (' <span class="failed">(failed to execute)</span>'
                                                               if bad else ""))
            else:
                links.append(f'<span class="missing">{label}: not written yet</span>')
        topic = f'<p class="topic">{html.escape(s.topic)}</p>' if s.topic else ""
        items.append(f'<li id="stage-{s.number}"><span class="num">{s.number}</span>'
                     f'<h2>{html.escape(s.title)}</h2>{topic}<p>{" ".join(links)}</p></li>')
    body = ("<main>\n<h1>mrcnn-edu: Mask R-CNN from first principles</h1>\n"
            "<p>The lecture, stage by stage. Each stage has a lesson (the idea, its equations, a worked example "
            "and graded exercises) and a notebook that draws it with the library's own functions.</p>\n"
            '<ol class="stages">\n' + "\n".join(items) + f"\n</ol>\n<p class=\"missing\">{mode}</p>\n</main>")
    return _html_page("mrcnn-edu: the course", body)


# ----------------------------------------------------------------------------------------------------------
# the book
# ----------------------------------------------------------------------------------------------------------

def build_book(out_dir="build/book", root=ROOT, execute=True, fast=False, timeout=600, progress=True,
               source_url=None) -> BookResult:
    """Execute the notebooks and write the course as static HTML into ``out_dir``; returns a ``BookResult``.

    ``root``: the repository (its ``lessons/`` and ``notebooks/``). ``execute=False`` renders the notebooks as
    committed (no outputs). ``fast``: the kernel gets ``MRCNN_EDU_FAST=1`` (small sizes); otherwise the
    variable is removed, so the book shows the full sizes. ``timeout``: seconds a cell may run. ``progress``:
    a tqdm bar over the notebooks. ``source_url``: where links to other repository files should go.
    Raises ``BookBuildError`` (after writing every page and the index) when a notebook failed to execute, and
    ValueError when ``root`` holds no course or ``timeout`` is not positive.
    """
    from tqdm.auto import tqdm

    if not timeout or timeout <= 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    root, out = Path(root).resolve(), Path(out_dir)
    stages = find_stages(root)
    out.mkdir(parents=True, exist_ok=True)
    result = BookResult(index=out / "index.html")
    linker = _Linker(root, out, stages, source_url)
    result.pages.append(_write(out / "style.css", CSS))
    for s in (s for s in stages if s.lesson):
        result.pages.append(_write(out / s.lesson_page, _lesson_html(s, stages, linker, root)))

    exporter = _exporter()
    env = _kernel_env(root, fast)
    notebooks = [s for s in stages if s.notebook]
    bar = tqdm(notebooks, desc="executing notebooks" if execute else "rendering notebooks", unit="notebook",
               disable=not progress, file=sys.stderr)
    for s in bar:
        bar.set_postfix_str(s.notebook.name)
        page, error = _notebook_html(s, stages, linker, root, exporter, execute=execute, timeout=timeout, env=env)
        result.pages.append(_write(out / s.notebook_page, page))
        if error:
            result.failed[s.notebook.stem] = error
            bar.write(f"{s.notebook.name} FAILED: {error}", file=sys.stderr)
    bar.close()

    mode = ("Notebooks shown as committed, not executed." if not execute else
            f"Notebooks executed {'with MRCNN_EDU_FAST=1 (small sizes)' if fast else 'at full size'}.")
    _write(result.index, _index_html(stages, result.failed, mode))  # last: a broken build keeps the old index
    result.pages.append(result.index)
    result.warnings = linker.warnings
    if result.failed:
        raise BookBuildError(result, len(notebooks))
    return result


# ----------------------------------------------------------------------------------------------------------
# command line (wired into mrcnn_edu/cli.py)
# ----------------------------------------------------------------------------------------------------------

HELP = "execute the notebooks and render the course as static HTML"


def add_arguments(p):
    """The flags of ``mrcnn-edu book`` (``cli.py`` registers it with ``HELP`` and ``run_book``)."""
    p.add_argument("--out", default="build/book", help="output folder (default: build/book)")
    p.add_argument("--fast", action="store_true", help="execute with MRCNN_EDU_FAST=1 (small sizes, quick)")
    p.add_argument("--no-execute", action="store_true", help="render the notebooks as committed, without outputs")
    p.add_argument("--timeout", type=int, default=600, help="seconds a notebook cell may run (default 600)")
    p.add_argument("--source-url", default=None,
                   help="base URL of the repository's files, for the lessons' links to the code "
                        "(e.g. https://github.com/OWNER/mrcnn-edu/blob/main); without it those links are dropped")


def run_book(args) -> int:
    """``mrcnn-edu book``: 0 when every page was built, 1 when a notebook failed (or there is no clone), 2 when
    nbconvert is missing."""
    if not (ROOT / "notebooks").is_dir() or not (ROOT / "lessons").is_dir():
        print(f"mrcnn-edu book: needs the notebooks/ and lessons/ of a git clone of mrcnn-edu (not beside the "
              f"installed package in {ROOT}); run it from a clone, after pip install -e '.[dev]'", file=sys.stderr)
        return 1
    try:
        result = build_book(args.out, execute=not args.no_execute, fast=args.fast, timeout=args.timeout,
                            source_url=args.source_url)
    except ImportError as err:
        print(f"mrcnn-edu book: needs nbconvert, nbclient, nbformat, ipykernel and latex2mathml ({err}); "
              f"install them with pip install -e '.[dev]'", file=sys.stderr)
        return 2
    except BookBuildError as err:
        for line in err.result.warnings:
            print(f"warning: {line}", file=sys.stderr)
        print(f"mrcnn-edu book: {len(err.result.failed)} notebook(s) failed to execute:", file=sys.stderr)
        for name, why in err.result.failed.items():
            print(f"  {name}: {why}", file=sys.stderr)
        print(f"the other pages are built; the failed ones show the error. Open {err.result.index}",
              file=sys.stderr)
        return 1
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"wrote {len(result.pages)} files to {Path(args.out)}/; open {result.index}")
    return 0
