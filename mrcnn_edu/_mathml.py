"""The course's formulas as MathML, written at build time: the book's pages typeset them with no script and no
network (every current browser renders MathML Core).

The Markdown of the lessons and of the notebooks' cells goes through nbconvert's Markdown parser, which finds
``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]`` and ``\\begin{env}...\\end{env}`` before anything else of a
line (so ``_`` and ``*`` in a formula are not emphasis) but after code spans and code blocks (so a ``$`` in code
stays code). Only its three math hooks change here: each formula is converted by ``latex2mathml`` and keeps its
TeX as an ``annotation`` (what a reader copies, what a screen reader may read). A formula the converter cannot
read is shown as its TeX in ``<code class="tex-error">`` and reported, never dropped.

Host-only: strings, no arrays. Needs nbconvert (>= 7) and latex2mathml (>= 3.77; the dev extra).
"""
from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

from latex2mathml.converter import convert
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

__all__ = ["MathMLRenderer", "markdown_to_html", "split_display", "tex_to_mathml"]

# latex2mathml leaves a delimiter after a size command as its TeX name (``\big\lfloor`` gives <mo>\lfloor</mo>)
_LEFT_AS_TEX = re.compile(r"(<mo\b[^>]*>)\\([A-Za-z]+)(</mo>)")
_TOKEN = re.compile(r"<m[io]\b[^>]*>([^<]*)</m[io]>")
# ... and spaces operators as a browser's operator dictionary does, not as TeX. \log, \exp, \sin come out as a
# bare <mi>log</mi> set flush against their neighbours ("t log s" reads "tlogs"), \max and \min as an <mo> with
# a thick space on each side ("max (x, 0)"), the bars of |x| as infix operators ("|x |"). TeX sets a thin space
# on each side of a function name, none before an opening bracket, and none around a bar.
_OPENS = r"<mo\b[^>]*>&#x000(?:28|5B|7B);"
_FUNCTION = re.compile(r"(</m(?:i|n|sub|sup|subsup|frac|sqrt|row|text)>|&#x000(?:29|5D|7D);</mo>)?"
                       r"(<mi>(?:arccos|arcsin|arctan|arg|cosh|cos|coth|cot|csc|deg|det|dim|exp|gcd|hom|inf|ker|lg|"
                       r"ln|log|Pr|sec|sinh|sin|sup|tanh|tan)</mi>)(?=(" + _OPENS + "|</)?)")
_LIMIT = re.compile(r"<mo( movablelimits=\"true\")?>(max|min|sup|inf|lim|liminf|limsup|det|gcd|Pr)</mo>"
                    r"(?=(" + _OPENS + ")?)")
_BAR = re.compile(r"<mo( stretchy=\"false\")?>(&#x0007C;|&#x02016;)</mo>")
_THIN = '<mspace width="0.167em" />'
# MathML elements that take a fixed number of children: one short of them (an unclosed \frac{a) draws garbage
_ARITY = {"mfrac": 2, "msub": 2, "msup": 2, "msubsup": 3, "munder": 2, "mover": 2, "munderover": 3, "mroot": 2}


def _symbol(name: str) -> str | None:
    """The character latex2mathml writes for the TeX command ``\\name`` on its own, or None."""
    try:
        m = _TOKEN.search(convert("\\" + name))
    except Exception:  # noqa: BLE001 - an unknown command is simply not a delimiter
        return None
    return m.group(1) if m and "\\" not in m.group(1) else None


def tex_to_mathml(tex: str, display: bool = False) -> tuple[str, str | None]:
    """``(html, problem)``: the MathML of the TeX formula ``tex`` (without its ``$``) and None, or, when it cannot
    be converted, the formula as TeX in a ``<code class="tex-error">`` and one line saying why.
    ``display``: a display formula (``$$``), set on its own line, else one inside the text."""
    source = tex.strip()
    try:
        mathml = convert(source, display="block" if display else "inline")
    except Exception as err:  # noqa: BLE001 - latex2mathml raises its own and plain errors alike
        return _as_tex(tex, display), type(err).__name__ + (f": {err}" if str(err) else "")
    mathml = _LEFT_AS_TEX.sub(lambda m: m.group(1) + (_symbol(m.group(2)) or "\\" + m.group(2)) + m.group(3),
                              mathml)
    mathml = _FUNCTION.sub(lambda m: (m.group(1) + _THIN if m.group(1) else "") + m.group(2) +
                           ("" if m.group(3) else _THIN), mathml)
    mathml = _LIMIT.sub(lambda m: f'<mo lspace="0.167em" rspace="{"0" if m.group(3) else "0.167em"}"'
                                  f'{m.group(1) or ""}>{m.group(2)}</mo>', mathml)
    mathml = _BAR.sub(lambda m: f'<mo lspace="0" rspace="0"{m.group(1) or ""}>{m.group(2)}</mo>', mathml)
    left = re.findall(r">[^<]*(\\[A-Za-z]+)", mathml)
    if left:
        return _as_tex(tex, display), f"not converted: {', '.join(left)}"
    broken = _malformed(mathml)
    if broken:
        return _as_tex(tex, display), broken
    # the formula itself, then its TeX: a browser draws the first child of <semantics> only
    start, end = mathml.index(">") + 1, mathml.rindex("</math>")
    annotation = f'<annotation encoding="application/x-tex">{html.escape(source, quote=False)}</annotation>'
    return f"{mathml[:start]}<semantics>{mathml[start:end]}{annotation}</semantics></math>", None


def _malformed(mathml: str) -> str | None:
    """Why the MathML cannot be drawn (an error element, a fraction or script short of a part), or None."""
    try:
        tree = ET.fromstring(mathml)
    except ET.ParseError:
        return None  # not XML (a named entity, say): a browser's HTML parser may still read it
    for element in tree.iter():
        tag = element.tag.rpartition("}")[2]
        if tag == "merror":
            return "the converter wrote an error"
        if tag in _ARITY and len(element) != _ARITY[tag]:
            return f"<{tag}> with {len(element)} parts instead of {_ARITY[tag]} (a missing brace?)"
    return None


def split_display(tex: str) -> list[str]:
    """A display formula cut at its top-level ``\\qquad`` (outside braces, ``\\left...\\right`` and
    environments): MathML cannot break a line, so the book sets the parts side by side where they fit and one
    under the other where they do not (a narrow window, the lesson's widest formulas)."""
    parts, depth, start = [], 0, 0
    for m in re.finditer(r"\\[{}]|[{}]|\\(begin|end|left|right|qquad)(?![A-Za-z])", tex):
        token = m.group(0)
        if token in ("{", "\\begin", "\\left"):
            depth += 1
        elif token in ("}", "\\end", "\\right"):
            depth -= 1
        elif token == "\\qquad" and depth == 0:
            parts.append(tex[start:m.start()])
            start = m.end()
    parts.append(tex[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _as_tex(tex: str, display: bool) -> str:
    code = f'<code class="tex-error">{html.escape(tex.strip(), quote=False)}</code>'
    return f'<span class="math-display">{code}</span>' if display else code


class MathMLRenderer(IPythonRenderer):
    """nbconvert's Markdown renderer (anchors on headings, attachments and embedded images as it does) with
    every formula written as MathML; ``problems`` collects one line per formula that could not be converted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.problems: list[str] = []

    def _math(self, tex: str, display: bool) -> str:
        out, problem = tex_to_mathml(tex, display)
        if problem:
            self.problems.append(f"the formula {tex.strip()!r}: {problem}")
        return out

    def block_math(self, body: str) -> str:
        parts = split_display(body)
        if len(parts) < 2:
            return self._math(body, display=True)
        return '<span class="math-display">' + "".join(self._math(p, display=True) for p in parts) + "</span>"

    def inline_math(self, body: str) -> str:
        return self._math(body, display=False)

    def latex_environment(self, name: str, body: str) -> str:
        return self._math(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)


def markdown_to_html(markdown: str, problems: list | None = None, **renderer_options) -> str:
    """``markdown`` as HTML with its formulas as MathML; formulas that could not be converted are appended to
    ``problems`` when given. ``renderer_options`` go to nbconvert's ``IPythonRenderer`` (``attachments``,
    ``embed_images``, ``path``, ``anchor_link_text``, ...)."""
    renderer = MathMLRenderer(escape=False, **renderer_options)
    out = MarkdownWithMath(renderer=renderer).render(markdown)
    if problems is not None:
        problems.extend(renderer.problems)
    return out
