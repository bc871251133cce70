"""The capstone: Mask R-CNN trained on the functions you wrote in the lessons.

    mrcnn-edu lessons capstone [--steps N] [--seed S]

trains the shapes model (``ModelConfig()``, N steps, 300 by default) with every function of your working copies
``lessons/NN_<stage>/exercise_work.py`` in place of the library's, and the library's where you have not written
one yet (a function whose body is still the stub's ``raise NotImplementedError``: read from its source, so a
stub is never called to find out). It prints which functions are yours, trains, scores the model on the shapes
validation split and ends with one line::

    capstone: box AP 0.412 mask AP 0.398 (reference: box AP 0.412 mask AP 0.398, same steps and seed)

The reference is the same run on the library alone, cached under ``runs/capstone/`` by steps, seed, settings
and a hash of the library's source. Your run's model is ``runs/capstone/yours/model.npz``.

Three things make a mistake visible, even where AP would hide it:

* **Your function against the library's, on every call.** Each of your functions is handed exactly the inputs
  the library's would get, and the library's runs beside it on the same inputs (a copy of the random generator
  where there is one); its result is thrown away, yours is used. A result of the wrong shape or type, NaN
  from finite inputs, or an exception stops the run naming the lesson, the function and your file's line. Other
  differences are counted; at the end each of your functions reads "the same on every call" or where it first
  differed, and by how much. A sampler that draws other random numbers than the library's is allowed (the
  lessons grade the counts, not the draw): it is reported as such, and the run then differs by training noise.
* **The final training loss** of both runs: equal when every function of yours gave the library's numbers.
* **Lesson 09 by hand.** Where you wrote its functions, the run is also scored with them (COCO AP per class
  from ``mask_iou`` / ``box_iou``, ``ap_at_thresholds``, ...) and set against pycocotools' on the same
  detections. They are not used in training.

How your function takes the library's place: the model calls private cores (``model.py`` imports
``_rpn_targets``, ``_roi_align``, ...; ``boxes._nms`` calls ``_box_iou``), looked up as module attributes when
called. For the run, every attribute of a ``mrcnn_edu`` module (and of your working copies, which import library
functions) that *is* one of the objects below is replaced by an adapter that calls your public function with
the public signature; all is put back afterwards. So a library function your copy imports (lesson 03 imports
``box_iou``) is yours where you wrote it, and a working copy that only re-exports the library is "yours" and
gives the reference to the digit. The shapes data set is made by the library alone, the same for both runs.

Where the model does at once what a core you can write does piece by piece (the proposals of every image,
``rpn._generate_proposals_batch``; RoIAlign's matrices made once for its forward and backward), the model calls,
while any function that core is made of is yours, the library's stand-in that does it piece by piece through
the per-image core (``BATCHED`` names each pair): so your ``generate_proposals`` (or the ``nms`` or ``box_iou``
inside it) runs once an image, as it would in a loop. The two give the same numbers to the last bit, so the
reference run does not depend on which runs.

===========  ================================  ============================================  =================
lesson       your function                     replaces                                      when
===========  ================================  ============================================  =================
01_iou       box_area                          boxes._box_area (p)                           T I
01_iou       box_iou                           boxes._box_iou (p)                            T I
01_iou       box_encode                        boxes._box_encode (p)                         T
01_iou       box_decode                        boxes._box_decode (p)                         T I
01_iou       nms                               boxes._nms (p)                                T I
02_anchors   grid_size                         anchors._grid_size (p)                        T I
02_anchors   base_anchors                      anchors._base_anchors (p)                     T I
02_anchors   generate_anchors                  anchors._generate_anchors (p)                 T I
03_rpn       match_by_iou                      matching._match_by_iou (p)                    T
03_rpn       label_anchors                     rpn._label_anchors (p)                        T
03_rpn       sample_balanced                   matching._sample_balanced (p)                 T
03_rpn       rpn_targets                       rpn._rpn_targets (p)                          T
03_rpn       rpn_loss                          rpn._rpn_loss (p)                             T
03_rpn       generate_proposals                rpn._generate_proposals (p)                   T I
04_roi       bilinear_interpolate              (none: the library builds whole matrices)     -
04_roi       roi_pool                          roi._roi_pool (p)                             roi_op=pool
04_roi       roi_pool_backward                 roi._roi_pool_backward (p)                    roi_op=pool
04_roi       roi_align                         roi._roi_align (p)                            T I
04_roi       roi_align_backward                roi._roi_align_backward (p)                   T
05_losses    smooth_l1_loss                    losses._smooth_l1_loss (p)                    T
05_losses    binary_cross_entropy_with_logits  losses._binary_cross_entropy_with_logits (p)  T
05_losses    softmax_cross_entropy             losses._softmax_cross_entropy (p)             T
05_losses    sigmoid_mask_loss                 losses._sigmoid_mask_loss (p)                 T
05_losses    softmax_mask_loss                 losses._softmax_mask_loss (p)                 mask_loss=softmax
06_layers    linear                            nn.functional._linear                         T I
06_layers    linear_backward                   nn.functional._linear_backward                T
06_layers    im2col                            nn.conv._windows* (p)                         T I
06_layers    col2im                            nn.conv._unwindows* (p)                       T I
06_layers    conv2d                            nn.conv._conv2d                               T I
06_layers    conv2d_backward                   nn.conv._conv2d_backward                      T
07_heads     box_head_targets                  roi_heads._box_head_targets* (p)              T
07_heads     fast_rcnn_loss                    roi_heads._fast_rcnn_loss (p)                 T
07_heads     mask_targets                      roi_heads._mask_targets* (p)                  T
07_heads     paste_masks                       heads.paste_masks                             I
08_train     rois_from_boxes                   roi.rois_from_boxes                           T I
08_train     sample_mask_rois                  matching.sample_mask_rois                     T
08_train     postprocess_detections            postprocess.postprocess_detections            I
08_train     detection_masks                   postprocess.detection_masks                   I
09_evaluate  mask_iou                          ap.mask_iou                                   AP
09_evaluate  match_detections                  ap.match_detections                           AP
09_evaluate  precision_recall                  ap.precision_recall                           AP
09_evaluate  average_precision                 ap.average_precision                          AP
09_evaluate  ap_at_thresholds                  ap.ap_at_thresholds                           AP
===========  ================================  ============================================  =================

Module names are ``mrcnn_edu.``-relative. (p): and the public function of that name in that module (what
library code and your copies import). *: an adapter between the core's arguments and the public ones:
``_windows`` / ``_unwindows`` take the GEMM's ``(C kh kw) x (N OH OW)`` columns where ``im2col`` / ``col2im``
have ``N x (C kh kw) x (OH OW)``; ``_mask_targets`` gets ``(m, m)`` where ``mask_targets`` gets ``m``;
``_box_head_targets`` returns a named tuple where you return four arrays. When: T training, I inference (the
validation's detections), AP the capstone's AP by hand after training, a setting the function needs
(``roi_op``, ``mask_loss``: the default model has RoIAlign and the sigmoid mask loss), - never. A forward and
its backward share a cache only you know, so ``linear`` / ``conv2d`` and their backwards replace the cores only,
and your backward runs only with your forward; your forward alone runs with the library's backward (the
library's cache is made beside yours).

Host-only orchestration around ``train.train``; the run is on NumPy whatever the backend switch says (your
code is NumPy code).
"""
from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import inspect
import json
import sys
import tempfile
import textwrap
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import backend
from .lessons import WORKING_COPY, list_lessons

__all__ = ["DEFAULT_STEPS", "ENTRIES", "CapstoneError", "StudentCodeError", "is_stub", "plan", "substituted",
           "run_capstone", "cmd_capstone"]

DEFAULT_STEPS = 300
_HERE = Path(__file__).resolve().parent


class CapstoneError(ValueError):
    """The capstone cannot start (a working copy that does not import, a library name the table lost)."""


class StudentCodeError(RuntimeError):
    """One of your functions raised, or returned what the model cannot use; the message names it."""


# ---------------------------------------------------------------------------------------------------------
# the table: which library objects each lesson function replaces
# ---------------------------------------------------------------------------------------------------------

class Entry(NamedTuple):
    lesson: str            # "01_iou"
    function: str          # the public name, in the lesson's exercise.py and the library
    targets: tuple         # (("mrcnn_edu.boxes._box_iou", adapter or None), ...)
    when: str              # "T I", "T", "I", "AP", "-", or "roi_op=pool" / "mask_loss=softmax"
    variable: bool = False  # its result's length depends on the data (a different length is a wrong answer,
                            # not a wrong shape)
    counts: object = None   # a sampler's counts (result -> tuple): what other random draws must leave equal


def _core(module, name, adapter=None, public=True):
    """``module._name`` (the core the model calls) and, unless ``public`` is False, ``module.name`` itself."""
    core = ((f"mrcnn_edu.{module}._{name}", adapter),)
    return core + ((f"mrcnn_edu.{module}.{name}", None),) if public else core


def _only(module, name):
    return ((f"mrcnn_edu.{module}.{name}", None),)


# adapters: ``adapter(run, args, kwargs)`` calls your public function through ``run`` with the core's arguments
# translated, and returns what the core returns
def _mask_targets_adapter(run, args, kwargs):
    gt_masks, proposals, matched, size, *rest = args
    m = size[0] if isinstance(size, (tuple, list)) else size
    return run(gt_masks, proposals, matched, m, *rest, **kwargs)


def _box_head_targets_adapter(run, args, kwargs):
    from .roi_heads import BoxHeadTargets
    out = run(*args, **kwargs)
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise _Returned(f"returned {_kind(out)}, expected (rois, labels, regression_targets, matched_gt_index)")
    return BoxHeadTargets(*out)


def _im2col_adapter(run, args, kwargs):
    x, kernel_size, stride, padding = args
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    length = ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1)
    cols = np.asarray(run(x, kernel_size, stride, padding))
    if cols.shape != (n, c * kh * kw, length):
        raise _Returned(f"returned shape {cols.shape}, expected N x (C kh kw) x (OH OW) = {(n, c * kh * kw, length)}")
    return np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(c * kh * kw, n * length)   # the GEMM's layout


def _col2im_adapter(run, args, kwargs):
    cols, x_shape, kernel_size, stride, padding = args
    n = x_shape[0]
    per_image = cols.reshape(cols.shape[0], n, -1).transpose(1, 0, 2)   # (C kh kw) x (N L) -> N x (C kh kw) x L
    return np.ascontiguousarray(run(per_image, tuple(x_shape), kernel_size, stride, padding))


def _sums(*masks):
    return tuple(int(np.asarray(m).sum()) for m in masks)


ENTRIES = (
    Entry("01_iou", "box_area", _core("boxes", "box_area"), "T I"),
    Entry("01_iou", "box_iou", _core("boxes", "box_iou"), "T I"),
    Entry("01_iou", "box_encode", _core("boxes", "box_encode"), "T"),
    Entry("01_iou", "box_decode", _core("boxes", "box_decode"), "T I"),
    Entry("01_iou", "nms", _core("boxes", "nms"), "T I", variable=True),
    Entry("02_anchors", "grid_size", _core("anchors", "grid_size"), "T I"),
    Entry("02_anchors", "base_anchors", _core("anchors", "base_anchors"), "T I"),
    Entry("02_anchors", "generate_anchors", _core("anchors", "generate_anchors"), "T I"),
    Entry("03_rpn", "match_by_iou", _core("matching", "match_by_iou"), "T"),
    Entry("03_rpn", "label_anchors", _core("rpn", "label_anchors"), "T"),
    Entry("03_rpn", "sample_balanced", _core("matching", "sample_balanced"), "T", counts=lambda out: _sums(*out)),
    Entry("03_rpn", "rpn_targets", _core("rpn", "rpn_targets"), "T",
          counts=lambda out: _sums(np.asarray(out[0]) == 1, np.asarray(out[0]) == 0)),
    Entry("03_rpn", "rpn_loss", _core("rpn", "rpn_loss"), "T"),
    Entry("03_rpn", "generate_proposals", _core("rpn", "generate_proposals"), "T I", variable=True),
    Entry("04_roi", "bilinear_interpolate", (), "-"),
    Entry("04_roi", "roi_pool", _core("roi", "roi_pool"), "roi_op=pool"),
    Entry("04_roi", "roi_pool_backward", _core("roi", "roi_pool_backward"), "roi_op=pool"),
    Entry("04_roi", "roi_align", _core("roi", "roi_align"), "T I"),
    Entry("04_roi", "roi_align_backward", _core("roi", "roi_align_backward"), "T"),
    Entry("05_losses", "smooth_l1_loss", _core("losses", "smooth_l1_loss"), "T"),
    Entry("05_losses", "binary_cross_entropy_with_logits", _core("losses", "binary_cross_entropy_with_logits"), "T"),
    Entry("05_losses", "softmax_cross_entropy", _core("losses", "softmax_cross_entropy"), "T"),
    Entry("05_losses", "sigmoid_mask_loss", _core("losses", "sigmoid_mask_loss"), "T"),
    Entry("05_losses", "softmax_mask_loss", _core("losses", "softmax_mask_loss"), "mask_loss=softmax"),
    Entry("06_layers", "linear", _core("nn.functional", "linear", public=False), "T I"),
    Entry("06_layers", "linear_backward", _core("nn.functional", "linear_backward", public=False), "T"),
    Entry("06_layers", "im2col", (("mrcnn_edu.nn.conv._windows", _im2col_adapter), ("mrcnn_edu.nn.conv.im2col", None)),
          "T I"),
    Entry("06_layers", "col2im", (("mrcnn_edu.nn.conv._unwindows", _col2im_adapter),
                                  ("mrcnn_edu.nn.conv.col2im", None)), "T I"),
    Entry("06_layers", "conv2d", _core("nn.conv", "conv2d", public=False), "T I"),
    Entry("06_layers", "conv2d_backward", _core("nn.conv", "conv2d_backward", public=False), "T"),
    Entry("07_heads", "box_head_targets", _core("roi_heads", "box_head_targets", _box_head_targets_adapter), "T",
          variable=True, counts=lambda out: (len(out[0]),) + _sums(np.asarray(out[1]) > 0)),
    Entry("07_heads", "fast_rcnn_loss", _core("roi_heads", "fast_rcnn_loss"), "T"),
    Entry("07_heads", "mask_targets", _core("roi_heads", "mask_targets", _mask_targets_adapter), "T"),
    Entry("07_heads", "paste_masks", _only("heads", "paste_masks"), "I"),
    Entry("08_train", "rois_from_boxes", _only("roi", "rois_from_boxes"), "T I"),
    Entry("08_train", "sample_mask_rois", _only("matching", "sample_mask_rois"), "T", counts=_sums),
    Entry("08_train", "postprocess_detections", _only("postprocess", "postprocess_detections"), "I", variable=True),
    Entry("08_train", "detection_masks", _only("postprocess", "detection_masks"), "I"),
    Entry("09_evaluate", "mask_iou", _only("ap", "mask_iou"), "AP"),
    Entry("09_evaluate", "match_detections", _only("ap", "match_detections"), "AP"),
    Entry("09_evaluate", "precision_recall", _only("ap", "precision_recall"), "AP"),
    Entry("09_evaluate", "average_precision", _only("ap", "average_precision"), "AP"),
    Entry("09_evaluate", "ap_at_thresholds", _only("ap", "ap_at_thresholds"), "AP"),
)
# The model's batched cores: each does at once what cores you can write do piece by piece (every image's
# proposals; RoIAlign's matrices made once for the forward and the backward), and names the library's stand-in
# that does it piece by piece, through those cores. While any function a core is made of is yours, the model
# (model.py, the one caller) calls the stand-in instead, so your function is called with exactly the
# library's arguments. A test traces each stand-in and checks that every function of ENTRIES it calls is
# named here.
BATCHED = (
    ("mrcnn_edu.rpn._generate_proposals_batch", "mrcnn_edu.rpn._generate_proposals_each",
     ("box_area", "box_iou", "box_decode", "nms", "generate_proposals")),
    ("mrcnn_edu.rpn._rpn_targets_batch", "mrcnn_edu.rpn._rpn_targets_each",
     ("box_area", "box_iou", "box_encode", "match_by_iou", "label_anchors", "sample_balanced", "rpn_targets")),
    ("mrcnn_edu.roi_heads._box_head_targets_batch", "mrcnn_edu.roi_heads._box_head_targets_each",
     ("box_area", "box_iou", "box_encode", "match_by_iou", "sample_balanced", "box_head_targets")),
    ("mrcnn_edu.matching._sample_mask_rois_batch", "mrcnn_edu.matching._sample_mask_rois_each",
     ("sample_mask_rois",)),
    ("mrcnn_edu.roi._roi_align_planned", "mrcnn_edu.roi._roi_align_unplanned", ("roi_align",)),
    ("mrcnn_edu.roi._roi_align_backward_planned", "mrcnn_edu.roi._roi_align_backward_unplanned",
     ("roi_align_backward",)),
)
# forward -> backward pairs whose cache is private to your code
_PAIRS = {"linear": "linear_backward", "conv2d": "conv2d_backward"}
# modules whose attributes are left alone: the data set must be the same for both runs (its generator also runs
# under ``_library_only``), and the figures are not part of the model
_KEPT = ("mrcnn_edu.data", "mrcnn_edu.visualize")
_WHEN = {"T": "training", "I": "inference", "AP": "AP by hand, after training", "-": "not used"}


def _replaces(entry):
    """The "replaces" cell of the docstring's table for ``entry``."""
    if not entry.targets:
        return "(none: the library builds whole matrices)"
    (first, adapter), rest = entry.targets[0], entry.targets[1:]
    text = first.replace("mrcnn_edu.", "") + ("*" if adapter else "")
    return text + (" (p)" if rest else "")


def mapping_table():
    """The table of the module docstring, made from ``ENTRIES`` (a test keeps the two equal)."""
    rows = [("lesson", "your function", "replaces", "when")]
    rows += [(e.lesson, e.function, _replaces(e), e.when) for e in ENTRIES]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])


def _resolve(dotted):
    module_name, _, attr = dotted.rpartition(".")
    module = importlib.import_module(module_name)
    if not hasattr(module, attr):
        raise CapstoneError(f"the library has no {dotted} any more: capstone.py's table (ENTRIES) needs updating")
    return getattr(module, attr)


def _used_in(entry, config):
    """Where ``entry`` runs with this model config, or None when this config never calls it."""
    if "=" in entry.when:
        field, value = entry.when.split("=")
        return "training + inference" if getattr(config, field) == value else None
    if entry.when == "-":
        return None
    return " + ".join(_WHEN[w] for w in entry.when.split())


# ---------------------------------------------------------------------------------------------------------
# your working copies: which functions are written
# ---------------------------------------------------------------------------------------------------------

def is_stub(fn) -> bool:
    """True when ``fn``'s body is the stub's: (a docstring and) ``raise NotImplementedError[(...)]``.

    Read from the source, so nothing is called. A function whose source cannot be read counts as written.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    func = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if func is None:
        return False
    body = [s for s in func.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            and not isinstance(s, ast.Pass)]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _load(path, lesson):
    name = f"mrcnn_edu_capstone_{lesson}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:   # the student's file: any error is reported as one line
        sys.modules.pop(name, None)
        raise CapstoneError(f"{_shown(path)} does not import ({type(err).__name__}: {err}); fix it first "
                            f"(`mrcnn-edu lessons check {lesson[:2]}` shows where)") from None
    return module


def _shown(path):
    path = Path(path)
    return f"{path.parent.parent.name}/{path.parent.name}/{path.name}"


class Row(NamedTuple):
    entry: Entry
    status: str            # "yours", "yours, unused", "library (not written)", "library (no copy)", ...
    fn: object             # your function where it is used, else None
    path: str              # your working copy
    note: str = ""         # why "yours, unused"


def plan(root=None, config=None):
    """Which function is whose: one ``Row`` per ``ENTRIES`` entry, and the loaded working copies.

    root   : the ``lessons/`` folder or the folder holding it (default: the clone's)
    config : the ``ModelConfig`` (what it calls decides the "used in" column; default ``ModelConfig()``)
    Returns ``(rows, modules)``. Raises ``CapstoneError`` for a working copy that does not import.
    """
    folders = {p.name: p for p in list_lessons(root)}
    modules, rows = {}, []
    for lesson in dict.fromkeys(e.lesson for e in ENTRIES):
        path = folders[lesson] / WORKING_COPY if lesson in folders else None
        if path is not None and path.exists():
            modules[lesson] = _load(path, lesson)
    for entry in ENTRIES:
        module = modules.get(entry.lesson)
        path = str(folders[entry.lesson] / WORKING_COPY) if entry.lesson in folders else ""
        fn = getattr(module, entry.function, None) if module is not None else None
        if module is None:
            status = "library (no copy)"
        elif not callable(fn):
            status = "library (not in file)"
        elif is_stub(fn):
            status = "library (not written)"
        else:
            status = "yours"
        rows.append(Row(entry, status, fn if status == "yours" else None, path))
    mine = {r.entry.function for r in rows if r.status == "yours"}
    for forward, backward in _PAIRS.items():
        if backward in mine and forward not in mine:
            note = f"not used: it reads the cache of your {forward}, not written yet"
            rows = [r._replace(status="yours, unused", fn=None, note=note) if r.entry.function == backward else r
                    for r in rows]
    return rows, modules


def _unused(entry, config):
    """Why this config never calls ``entry``."""
    if entry.when == "-":
        return "the library has no one-point function"
    field, value = entry.when.split("=")
    return f"needs {field}={value!r}, this model has {getattr(config, field)!r}"


def format_plan(rows, config):
    lines = [f"  {'lesson':<12}{'function':<34}{'code':<23}used in"]
    for r in rows:
        used = r.note or _used_in(r.entry, config) or f"not used: {_unused(r.entry, config)}"
        lines.append(f"  {r.entry.lesson:<12}{r.entry.function:<34}{r.status:<23}{used}")
    mine = sum(r.status == "yours" for r in rows)
    lines.append(f"  yours: {mine} of {len(rows)} functions; the library's for the other {len(rows) - mine}")
    missing = sorted({r.entry.lesson for r in rows if r.status == "library (no copy)"})
    if missing:
        lines.append(f"  no working copy of {', '.join(missing)}: `mrcnn-edu lessons start` makes them")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# the substitution: your function in, the library's beside it for comparison
# ---------------------------------------------------------------------------------------------------------

class _Returned(Exception):
    """An adapter found your result unusable (the message says why)."""


class _Run:
    """What one substituted run records (one at a time)."""
    bypass = False        # inside the library's shadow call: everything goes straight to the library
    shadow_seconds = 0.0
    sequence = 0          # calls so far, to tell which function differed first
    step = None           # the training step (1-based), None outside training
    phase = "before training"
    last_returned = None  # the stage whose result the library used last


_RUN = _Run()


def _when():
    return f"at training step {_RUN.step}" if _RUN.phase == "training" else _RUN.phase


class Stage:
    """One of your functions at work: its calls, time, and how it compared with the library's."""

    def __init__(self, row):
        self.row, self.fn, self.entry = row, row.fn, row.entry
        self.calls, self.seconds, self.active = 0, 0.0, 0
        self.differ, self.other_draws, self.first, self.first_seq = 0, 0, None, None

    @property
    def name(self):
        return f"lesson {self.entry.lesson} {self.entry.function}"

    def stop(self, what):
        """The error that stops the run: this function, what it did, when, and where to look next."""
        return StudentCodeError(f"{self.name} (yours) {what} {_when()}; `mrcnn-edu lessons check "
                                f"{self.entry.lesson[:2]}` tests it on small cases")

    def run(self, *args, **kwargs):
        """Your function on ``args``, timed (without the library's shadow calls made inside it)."""
        self.active += 1
        start, shadow_before = time.perf_counter(), _RUN.shadow_seconds
        try:
            return self.fn(*args, **kwargs)
        except StudentCodeError:
            raise
        except Exception as err:   # your code: any error stops the run, named
            raise self.stop(f"raised {type(err).__name__}: {err} [{self._where(err)}]") from err
        finally:
            self.active -= 1
            self.seconds += time.perf_counter() - start - (_RUN.shadow_seconds - shadow_before)

    def _where(self, err):
        frames = traceback.extract_tb(err.__traceback__)
        mine = [f for f in frames if Path(f.filename).resolve() == Path(self.row.path).resolve()]
        f = (mine or frames)[-1]
        return f"{_shown(f.filename) if mine else f.filename}, line {f.lineno}, in {f.name}"

    def record(self, note, other_draws):
        self.differ += 1
        self.other_draws += bool(other_draws)
        if self.first is None:
            self.first = f"{note}, {_when()}, call {self.calls}"
            self.first_seq = _RUN.sequence


def _kind(x):
    if x is None:
        return "None"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array of shape {tuple(x.shape)} ({x.dtype})"
    return f"a {type(x).__name__}"


def _compare(mine, lib, variable):
    """``(value, note)``: your result made ready for the library (floats in the library's dtype) and None
    when it equals the library's result to float tolerance, else a short note. Raises ``_Returned`` for a
    result the library cannot use (None, another structure, another shape, bool against numbers, NaN)."""
    if lib is None:
        return None, None                      # e.g. dx with need_dx=False: whatever you return is not used
    if mine is None:
        raise _Returned(f"returned None where the library returns {_kind(lib)}; does it return its result?")
    if isinstance(lib, dict):
        if not isinstance(mine, dict) or set(lib) - set(mine):
            raise _Returned(f"returned {_kind(mine)}, expected a dict with keys {sorted(lib)}")
        out, notes = {}, []
        for key in lib:
            out[key], note = _compare(mine[key], lib[key], variable)
            notes += [f"{key}: {note}"] if note else []
        return out, "; ".join(notes) or None
    if isinstance(lib, (tuple, list)):
        if not isinstance(mine, (tuple, list)) or len(mine) != len(lib):
            raise _Returned(f"returned {_kind(mine)}, expected a {type(lib).__name__} of {len(lib)}")
        pairs = [_compare(m, x, variable) for m, x in zip(mine, lib)]
        values = [v for v, _ in pairs]
        notes = [f"[{i}] {n}" for i, (_, n) in enumerate(pairs) if n]
        value = type(lib)(*values) if hasattr(lib, "_fields") else type(lib)(values)
        return value, "; ".join(notes) or None
    m, ref = np.asarray(mine), np.asarray(lib)
    if m.dtype == object:
        raise _Returned(f"returned {_kind(mine)} where the library returns {_kind(lib)}")
    if (ref.dtype == bool) != (m.dtype == bool):
        raise _Returned(f"returned dtype {m.dtype} where the library returns {ref.dtype} (a bool mask and 0/1 "
                        "numbers index differently)")
    if ref.dtype.kind in "iu" and m.dtype.kind not in "iu":
        raise _Returned(f"returned dtype {m.dtype} where the library returns integers ({ref.dtype})")
    if m.ndim != ref.ndim or m.shape[1:] != ref.shape[1:] or (m.shape[:1] != ref.shape[:1] and not variable):
        raise _Returned(f"returned shape {m.shape} where the library returns {ref.shape} on the same inputs")
    value = m.astype(ref.dtype) if ref.dtype.kind == "f" and m.dtype != ref.dtype else m
    if not isinstance(lib, np.ndarray) and m.ndim == 0:   # a Python or NumPy scalar: hand on the same type
        value = type(lib)(m.item()) if isinstance(lib, (bool, int, float)) else value
    if m.shape != ref.shape:
        return value, f"{m.shape[0]} rows where the library has {ref.shape[0]}"
    if ref.dtype.kind == "f" or m.dtype.kind == "f":
        m64, r64 = m.astype(np.float64), ref.astype(np.float64)
        finite = np.isfinite(r64)
        if not np.isfinite(m64[finite]).all():
            raise _Returned("returned NaN or inf where the library's numbers are finite")
        if m.size == 0:
            return value, None
        scale = max(float(np.abs(r64[finite]).max(initial=0.0)), float(np.abs(m64[finite]).max(initial=0.0)))
        gap = float(np.abs(m64 - r64)[finite].max(initial=0.0))
        same = gap <= 1e-4 * scale + 1e-12     # float rounding of another order of operations
        return value, (None if same else f"largest difference {gap:.3g} (values up to {scale:.3g})")
    wrong = int((m != ref).sum())
    return value, (None if wrong == 0 else f"{wrong} of {m.size} values differ")


def _rng_argument(signature, args, kwargs):
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError:
        return None, None
    name = "rng" if "rng" in bound.arguments else None
    return name, bound


class _library_only:
    """Inside: every replacement calls the library's function (the data set is the same for both runs)."""

    def __enter__(self):
        self.previous, _RUN.bypass = _RUN.bypass, True

    def __exit__(self, *exc):
        _RUN.bypass = self.previous


def _shadow(original, args, kwargs):
    """The library's result on the same arguments, everything inside it the library's too. It runs before
    yours, so that a function of yours that writes into its inputs cannot change what the library sees."""
    start = time.perf_counter()
    try:
        with _library_only():
            return original(*args, **kwargs)
    finally:
        _RUN.shadow_seconds += time.perf_counter() - start


def _replacement(stage, original, adapter):
    """What stands in for ``original`` during the run: your function through ``adapter``, compared with it."""
    signature = inspect.signature(original)

    def replacement(*args, **kwargs):
        if _RUN.bypass or stage.active:   # the library's shadow, or your function calling the library's own
            return original(*args, **kwargs)
        _RUN.sequence += 1
        stage.calls += 1
        rng_name, bound = _rng_argument(signature, args, kwargs)
        shadow_args, shadow_kwargs, real_rng = args, kwargs, None
        if rng_name is not None:       # the library draws from a copy: your draws stay yours
            real_rng = bound.arguments[rng_name]
            bound.arguments[rng_name] = copy.deepcopy(real_rng)
            shadow_args, shadow_kwargs = bound.args, bound.kwargs
        lib = _shadow(original, shadow_args, shadow_kwargs)
        try:
            mine = adapter(stage.run, args, kwargs) if adapter else stage.run(*args, **kwargs)
        except _Returned as err:
            raise stage.stop(str(err)) from None
        try:
            value, note = _compare(mine, lib, stage.entry.variable)
        except _Returned as err:
            raise stage.stop(str(err)) from None
        if note:   # a generator left elsewhere than the library's copy: your function drew other numbers
            drew = real_rng is not None and _state(real_rng) != _state(bound.arguments[rng_name])
            counts = stage.entry.counts
            if drew and counts is not None and counts(value) != counts(lib):   # other draws, and wrong counts
                drew, note = False, f"counts {counts(value)} where the library's are {counts(lib)}"
            stage.record(note, drew)
        _RUN.last_returned = stage
        return value

    replacement.__wrapped__ = original
    replacement.__name__ = getattr(original, "__name__", "replacement")
    return replacement


def _state(rng):
    return getattr(getattr(rng, "bit_generator", None), "state", None)


class _Cache(NamedTuple):
    """Your forward's cache for your backward, and the library's for its shadow."""
    yours: object
    library: object


def _forward_replacement(stage, original, with_backward):
    """``_linear`` / ``_conv2d``: your output; your cache if your backward runs too, else the library's."""

    def replacement(*args):
        if _RUN.bypass or stage.active:
            return original(*args)
        _RUN.sequence += 1
        stage.calls += 1
        lib_out, lib_cache = _shadow(original, args, {})
        mine = stage.run(*args)
        if not isinstance(mine, (tuple, list)) or len(mine) != 2:
            raise stage.stop(f"returned {_kind(mine)}, expected (out, cache)")
        out, cache = mine
        return _settle(stage, out, lib_out), (_Cache(cache, lib_cache) if with_backward else lib_cache)

    replacement.__wrapped__ = original
    return replacement


def _settle(stage, mine, lib):
    """Your result against the library's: a wrong kind stops the run, other values are recorded; returns yours."""
    try:
        value, note = _compare(mine, lib, False)
    except _Returned as err:
        raise stage.stop(str(err)) from None
    if note:
        stage.record(note, False)
    _RUN.last_returned = stage
    return value


def _backward_replacement(stage, original):
    """``_linear_backward`` / ``_conv2d_backward`` on a ``_Cache``: yours on your cache, the library's on its."""

    def replacement(dout, cache, *rest):
        if not isinstance(cache, _Cache):
            return original(dout, cache, *rest)
        if _RUN.bypass or stage.active:
            return original(dout, cache.library, *rest)
        _RUN.sequence += 1
        stage.calls += 1
        lib = _shadow(original, (dout, cache.library) + tuple(rest), {})
        return _settle(stage, stage.run(dout, cache.yours, *rest), lib)

    replacement.__wrapped__ = original
    return replacement


class substituted:
    """Context manager: your functions (``plan``'s "yours" rows) in the library's place, put back on exit.

    ``stages`` (name -> ``Stage``) holds each function's calls, time and comparison with the library.
    """

    def __init__(self, rows, modules):
        self.rows, self.modules = rows, modules
        self.stages = {r.entry.function: Stage(r) for r in rows if r.status == "yours"}
        self._undo = []

    def _replacements(self):
        by_id = {}
        for name, stage in self.stages.items():
            for dotted, adapter in stage.entry.targets:
                original = _resolve(dotted)
                if name in _PAIRS:           # the pairs replace their cores only (the caches are private)
                    new = _forward_replacement(stage, original, _PAIRS[name] in self.stages)
                elif name in _PAIRS.values():
                    new = _backward_replacement(stage, original)
                else:
                    new = _replacement(stage, original, adapter)
                by_id[id(original)] = (original, new)
        return by_id

    def _stand_ins(self):
        """``{id(batched core): (it, the library's per-image stand-in)}`` for the cores made of yours."""
        chosen = {}
        for batched, each, made_of in BATCHED:      # your per-image function, or one it calls: the loop
            if set(made_of) & set(self.stages):
                original = _resolve(batched)
                chosen[id(original)] = (original, _resolve(each))
        return chosen

    def __enter__(self):
        by_id = self._replacements()
        _RUN.__dict__.clear()          # a fresh record (class attributes give the defaults)
        self._backend = backend.name
        backend.use("numpy")
        holders = [m for n, m in list(sys.modules.items()) if m is not None and n != __name__
                   and (n == "mrcnn_edu" or n.startswith("mrcnn_edu.")) and not n.startswith(_KEPT)]
        stand_ins = self._stand_ins()
        for module in holders + list(self.modules.values()):
            replace = {**by_id, **stand_ins} if module.__name__ == "mrcnn_edu.model" else by_id
            for attr, value in list(vars(module).items()):
                hit = replace.get(id(value))
                if hit is not None and hit[0] is value:
                    self._undo.append((module, attr, value))
                    setattr(module, attr, hit[1])
        return self

    def __exit__(self, *exc):
        for module, attr, value in reversed(self._undo):
            setattr(module, attr, value)
        self._undo = []
        backend.use(self._backend)
        return False


# ---------------------------------------------------------------------------------------------------------
# the two runs
# ---------------------------------------------------------------------------------------------------------

def _source_class():
    from .train import ShapesData

    class CapstoneShapes(ShapesData):
        """The shapes data of ``train``, keeping the final evaluation's detections and counting steps;
        ``after_first_step(seconds)`` is called once the first step is done."""
        after_first_step = None

        def __init__(self, *args):
            with _library_only():      # the shapes generator places its shapes with box_iou
                super().__init__(*args)

        def batch(self, step, batch_size):
            if step == 0:
                self.started = time.perf_counter()
            elif step == 1 and self.after_first_step is not None:
                self.after_first_step(time.perf_counter() - self.started)
            _RUN.phase, _RUN.step = "training", step + 1
            with _library_only():
                return super().batch(step, batch_size)

        def evaluate(self, model, batch_size=16):
            _RUN.phase = "during the evaluation (inference on the validation images)"
            self.result = super().evaluate(model, batch_size)
            return self.result

    return CapstoneShapes


def _train(out_dir, model_config, train_config, progress, after_first_step=None):
    """One run with ``train.train``; returns ``{"box_AP", "mask_AP", "loss"}``, its detections and samples."""
    from .train import train
    source = _source_class()(train_config.seed, model_config.image_size, train_config.val_images)
    source.after_first_step = after_first_step
    summary = train(out_dir, model_config, train_config, data=source, progress=progress, overwrite=True)
    if summary.get("interrupted"):
        raise KeyboardInterrupt("interrupted")
    metrics, detections, _ = source.result
    logged = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    loss = next((r["loss"] for r in reversed(logged) if "loss" in r), None)
    return {"box_AP": metrics["box_AP"], "mask_AP": metrics["mask_AP"], "loss": loss}, detections, source.validation


def _library_hash():
    digest = hashlib.sha256()
    for path in sorted(_HERE.rglob("*.py")):
        digest.update(str(path.relative_to(_HERE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _reference(model_config, train_config, cache_dir, progress, say):
    """The library-only run of the same settings, from ``cache_dir`` when it was trained before."""
    key = hashlib.sha256(json.dumps({"model": model_config.to_dict(), "train": asdict(train_config),
                                     "library": _library_hash()}, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"reference-{key}.json"
    if path.exists():
        say(f"reference: the library's run of the same steps and seed, from {path}")
        saved = json.loads(path.read_text())
        return {k: saved[k] for k in ("box_AP", "mask_AP", "loss")}, True
    say(f"reference: training the same {train_config.steps} steps on the library alone (kept in {path})")
    previous = backend.name
    backend.use("numpy")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result, _, _ = _train(Path(tmp) / "reference", model_config, train_config, progress)
    finally:
        backend.use(previous)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(result, steps=train_config.steps, seed=train_config.seed), indent=2))
    return result, False


def _ap_by_hand(detections, samples, num_classes):
    """COCO box and mask AP from lesson 09's functions (looked up now: yours where substituted)."""
    from . import ap, boxes
    from .data.shapes import boxes_from_masks
    per_class = {k: ([], [], []) for k in range(1, num_classes)}
    for d, (_, masks, class_ids) in zip(detections, samples):
        gt_boxes = boxes_from_masks(masks).astype(np.float64)
        for k, (box_ious, mask_ious, scores) in per_class.items():
            mine, theirs = np.asarray(d["labels"]) == k, np.asarray(class_ids) == k
            box_ious.append(boxes.box_iou(np.asarray(d["boxes"], np.float64)[mine], gt_boxes[theirs]))
            mask_ious.append(ap.mask_iou(np.asarray(d["masks"])[mine], masks[theirs]))
            scores.append(np.asarray(d["scores"], np.float64)[mine])
    result = {}
    for name, column in (("box_AP", 0), ("mask_AP", 1)):
        per = np.array([ap.ap_at_thresholds(v[column], v[2]) for v in per_class.values()])
        per = per[per[:, 0] > -1]            # classes without objects are left out, as COCO does
        result[name] = float(per.mean()) if len(per) else -1.0
    return result


def _first_step_note(stages, steps, progress, say):
    """After the first step: how long the run will take, and which function of yours takes the time."""
    def note(seconds):
        slowest = max(stages.values(), key=lambda s: s.seconds)
        if seconds < 2 or steps < 2 or slowest.seconds < 0.5 * seconds:
            return
        from tqdm.auto import tqdm
        text = (f"the first step took {seconds:.1f} s, {slowest.seconds:.1f} s of it in your "
                f"{slowest.entry.function} (lesson {slowest.entry.lesson}): {steps} steps take about "
                f"{seconds * steps / 60:.0f} min. A loop over pixels, RoIs or anchors is fine in a lesson, slow here")
        (tqdm.write if progress else say)(text)
    return note


def _run_yours(rows, modules, model_config, train_config, out_dir, progress, say):
    with substituted(rows, modules) as sub:
        if not sub.stages:
            return None, sub.stages, None
        try:
            result, detections, samples = _train(out_dir, model_config, train_config, progress,
                                                 _first_step_note(sub.stages, train_config.steps, progress, say))
            by_hand = None
            if any(r.entry.lesson == "09_evaluate" and r.status == "yours" for r in rows):
                _RUN.phase = "computing AP by hand (lesson 09)"
                by_hand = _ap_by_hand(detections, samples, model_config.num_classes)
        except (StudentCodeError, KeyboardInterrupt):
            raise
        except Exception as err:
            from .train import TrainingDiverged
            first = _first_to_differ(sub.stages)
            hint = (f"; the first of your functions to differ from the library's was {first.name}: {first.first}"
                    if first else "")
            if isinstance(err, TrainingDiverged):
                raise StudentCodeError(f"training diverged with your functions ({err}){hint}") from err
            last = _RUN.last_returned
            if last is None:
                raise
            raise StudentCodeError(f"the library failed ({type(err).__name__}: {err}) {_when()}, after your "
                                   f"{last.name} returned: check what it returns{hint}") from err
        return dict(result, by_hand=by_hand), sub.stages, out_dir


def _first_to_differ(stages):
    differing = [s for s in stages.values() if s.first_seq is not None and s.other_draws < s.differ]
    return min(differing, key=lambda s: s.first_seq) if differing else None


def format_stages(stages, config):
    lines = [f"  {'lesson':<12}{'function':<34}{'calls':>7}{'seconds':>9}  against the library, same inputs"]
    for s in stages.values():
        if s.calls == 0:
            verdict = "never called" + ("" if _used_in(s.entry, config) else f" ({_unused(s.entry, config)})")
        elif s.differ == 0:
            verdict = "the same on every call"
        elif s.other_draws == s.differ:
            verdict = f"other random draws than the library's on {s.differ} of {s.calls} calls (allowed)"
        else:
            verdict = f"differs on {s.differ} of {s.calls} calls; first: {s.first}"
        lines.append(f"  {s.entry.lesson:<12}{s.entry.function:<34}{s.calls:>7}{s.seconds:>9.2f}  {verdict}")
    return "\n".join(lines)


def _verdict(yours, reference, stages):
    moved = (f"box AP {yours['box_AP'] - reference['box_AP']:+.3f}, mask AP "
             f"{yours['mask_AP'] - reference['mask_AP']:+.3f} against the reference")
    first = _first_to_differ(stages)
    if first is not None:
        return (f"verdict: your {first.entry.function} (lesson {first.entry.lesson}) is the first of your functions "
                f"to differ from the library's ({first.first}); from there your run left the reference's ({moved}). "
                f"`mrcnn-edu lessons check {first.entry.lesson[:2]}` tests it on small cases")
    drawers = [s.entry.function for s in stages.values() if s.other_draws]
    if drawers:
        return (f"verdict: your functions give the library's numbers, but {', '.join(drawers)} draw other random "
                f"numbers than the library's (allowed), so the two runs saw other mini-batches: a few points of AP "
                f"either way is training noise, not a mistake ({moved})")
    return (f"verdict: every function of yours gave the library's numbers on every call: this is the reference "
            f"model, trained on your code ({moved})")


def run_capstone(steps=DEFAULT_STEPS, seed=0, root=None, out=None, model_config=None, train_changes=None,
                 cache_dir=None, progress=True, say=print):
    """Train on your functions and on the library's; returns what ``cmd_capstone`` prints, as a dict.

    steps, seed   : of both runs
    root          : the lessons (``lessons.lessons_dir``); out: where your run goes (``out/yours``), default
                    ``runs/capstone``; cache_dir: where the reference is kept (default ``out``)
    model_config  : default ``ModelConfig()``, the shapes model; train_changes: ``TrainConfig`` fields to change
                    (``batch_size``, ``val_images``, ...)
    say           : prints a line
    Returns ``{"rows", "stages", "yours", "reference", "by_hand", "verdict", "line", "run"}``; ``yours`` and
    ``reference`` are ``{"box_AP", "mask_AP", "loss"}``. Raises ``StudentCodeError`` naming the lesson and
    function when one of yours stops the run, ``CapstoneError`` when it cannot start.
    """
    from .model import ModelConfig
    from .train import TrainConfig
    config = model_config or ModelConfig()
    # the warmup shrinks with a short run (``train``'s 100 steps would leave 50 steps at a tiny learning rate)
    base = dict(steps=steps, seed=seed, eval_every=steps + 1, checkpoint_every=steps,
                warmup_steps=min(TrainConfig.warmup_steps, steps // 5))
    tcfg = TrainConfig(**dict(base, **(train_changes or {})))
    out = Path("runs/capstone" if out is None else out)
    rows, modules = plan(root, config)
    say("Capstone: Mask R-CNN on shapes, trained on your functions (lessons/NN_*/exercise_work.py) where you wrote"
        " them")
    say(format_plan(rows, config))
    say(f"\nyour run: {steps} steps, seed {seed}, into {out / 'yours'}")
    yours, stages, run_dir = _run_yours(rows, modules, config, tcfg, out / "yours", progress, say)
    if run_dir is not None:
        say(f"your model: {run_dir / 'model.npz'} (`mrcnn-edu predict --checkpoint` draws what it finds)")
    reference, _ = _reference(config, tcfg, out if cache_dir is None else cache_dir, progress, say)
    if yours is None:
        say("nothing of yours is written yet: your run is the reference run")
        yours = dict(reference, by_hand=None)
    by_hand = yours.pop("by_hand")
    if stages:
        say("\nyour functions at work (seconds: in your code, the library's comparison runs excluded):")
        say(format_stages(stages, config))
    say(f"final training loss: yours {_number(yours['loss'])}, reference {_number(reference['loss'])}")
    nines = [s for s in stages.values() if s.entry.lesson == "09_evaluate"]
    if by_hand is not None:
        parts = ", ".join(s.entry.function for s in nines) + (", box_iou" if "box_iou" in stages else "")
        agree = max(abs(by_hand["box_AP"] - yours["box_AP"]), abs(by_hand["mask_AP"] - yours["mask_AP"]))
        say(f"AP by hand (lesson 09, yours: {parts}): box AP {by_hand['box_AP']:.3f} mask AP "
            f"{by_hand['mask_AP']:.3f}; pycocotools on the same detections: box AP {yours['box_AP']:.3f} mask AP "
            f"{yours['mask_AP']:.3f} ({'the same' if agree < 1e-9 else f'{agree:.2g} apart'})")
    else:
        say("lesson 09 (AP by hand): not written yet; its functions are not used in training, and the AP below is "
            "pycocotools'")
    verdict = _verdict(yours, reference, stages) if stages else "verdict: the reference run (nothing of yours yet)"
    say(verdict)
    line = (f"capstone: box AP {yours['box_AP']:.3f} mask AP {yours['mask_AP']:.3f} (reference: box AP "
            f"{reference['box_AP']:.3f} mask AP {reference['mask_AP']:.3f}, same steps and seed)")
    say(line)
    return {"rows": rows, "stages": stages, "yours": yours, "reference": reference, "by_hand": by_hand,
            "verdict": verdict, "line": line, "run": run_dir}


def _number(x):
    return "-" if x is None else f"{x:.6g}"


def cmd_capstone(steps=None, seed=0, root=None, out=None, **options) -> int:
    """``mrcnn-edu lessons capstone``: 0 when it ran to the end, 1 when one of your functions stopped it (the
    last line then names it), 130 on Ctrl-C. Errors before the start (a working copy that does not import)
    raise ``CapstoneError``, a ``ValueError`` the command line prints as one line. ``options`` go to
    ``run_capstone`` (the tests pass a small model)."""
    steps = DEFAULT_STEPS if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CapstoneError(f"--steps: expected an int >= 1, got {steps!r}")
    try:
        run_capstone(steps, seed, root, out, **options)
    except StudentCodeError as err:
        print(f"capstone: stopped: {err}", flush=True)
        return 1
    except KeyboardInterrupt:
        print("capstone: interrupted", flush=True)
        return 130
    return 0
