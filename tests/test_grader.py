"""The grader diagnoses: every failing case listed with its inputs, small arrays in full with the wrong
entries marked, and a known mistake named when the wrong answer is the one it gives.

Each named mistake is planted in a working copy (``exercise_work.py`` = a copy of ``reference.py`` with one
function overridden by the mistaken version) of a copy of ``lessons/``, graded through
``mrcnn_edu.lessons.check`` (one pytest process for a round of plants that do not touch the same function),
and its ``looks like: ...`` line must appear under its task. Two mistakes that the lesson tests of this
commit do not exercise (NMS ties, RoIPool corners on .5) get a small probe test file in the copy, written
like a lesson test.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrcnn_edu import lessons

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
if str(LESSONS) not in sys.path:
    sys.path.insert(0, str(LESSONS))

import _grading  # noqa: E402


# ---------------------------------------------------------------------------------------------------------
# the planted mistakes: name -> (lesson, task function, code appended to reference.py, the diagnosis to see)
# ---------------------------------------------------------------------------------------------------------

PLANTS = {
    "+1 pixel width (box_iou)": ("01_iou", "box_iou", '''
def box_iou(boxes1, boxes2):
    b1, b2 = np.asarray(boxes1, float), np.asarray(boxes2, float)
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    x1, y1 = np.maximum(b1[:, None, 0], b2[None, :, 0]), np.maximum(b1[:, None, 1], b2[None, :, 1])
    x2, y2 = np.minimum(b1[:, None, 2], b2[None, :, 2]), np.minimum(b1[:, None, 3], b2[None, :, 3])
    inter = np.clip(x2 - x1 + 1, 0, None) * np.clip(y2 - y1 + 1, 0, None)
    return inter / (area1[:, None] + area2[None, :] - inter)
''', "looks like: the +1 pixel width"),
    "unstable sort (nms)": ("01_iou", "nms", '''
def nms(boxes, scores, iou_threshold):
    from mrcnn_edu.boxes import box_iou as iou
    order = np.argsort(scores)[::-1]            # ascending, reversed: ties come out last index first
    keep, gone = [], np.zeros(len(boxes), dtype=bool)
    for i in order:
        if not gone[i]:
            keep.append(int(i))
            gone |= iou(boxes[i:i + 1], boxes)[0] > iou_threshold
    return np.array(keep, dtype=np.int64)
''', "looks like: an unstable sort"),
    "anchors at cell corners (generate_anchors)": ("02_anchors", "generate_anchors", '''
from mrcnn_edu.anchors import generate_anchors as _library_anchors

def generate_anchors(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                     dtype="float32"):
    return _library_anchors(image_size, stride, sizes, ratios, 0.0, dtype)      # offset forgotten
''', "looks like: anchors centred on the cells' corners"),
    "x and y swapped (bilinear_interpolate)": ("04_roi", "bilinear_interpolate", '''
_right_bilinear = bilinear_interpolate

def bilinear_interpolate(plane, y, x):
    return _right_bilinear(np.asarray(plane).T, y, x)                          # plane[x, y]
''', "looks like: x and y swapped: the plane read at"),
    "rounding half to even (roi_pool)": ("04_roi", "roi_pool", '''
from mrcnn_edu.roi import roi_pool as _library_roi_pool

def roi_pool(features, rois, output_size, spatial_scale=1.0, bins="caffe"):
    rois = np.array(rois, dtype=float)
    rois[:, 1:] = np.round(rois[:, 1:] * spatial_scale) / spatial_scale      # NumPy rounds 2.5 to 2
    return _library_roi_pool(features, rois, output_size, spatial_scale, bins)
''', "looks like: rounding half to even"),
    "aligned off by half a pixel (roi_align)": ("04_roi", "roi_align", '''
from mrcnn_edu.roi import roi_align as _library_roi_align

def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    return _library_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, False)
''', "looks like: `aligned` off by half a pixel"),
    "softmax over classes (sigmoid_mask_loss)": ("05_losses", "sigmoid_mask_loss", '''
def sigmoid_mask_loss(mask_logits, labels, mask_targets):
    return softmax_mask_loss(mask_logits, labels, mask_targets)
''', "looks like: a softmax over the K classes"),
    "kernel not flipped (conv2d_backward)": ("06_layers", "conv2d_backward", '''
from mrcnn_edu.nn.functional import conv2d_backward as _library_backward

def conv2d_backward(dout, cache, need_dx=True):
    as_is = cache._replace(w=np.ascontiguousarray(cache.w[:, :, ::-1, ::-1]))  # the library flips it back
    dx = _library_backward(dout, as_is, need_dx)[0]
    _, dw, db = _library_backward(dout, cache, need_dx)
    return dx, dw, db
''', "the kernel was not flipped"),
    # second round: other mistakes of the same functions
    "mask loss over all K channels (sigmoid_mask_loss)": ("05_losses", "sigmoid_mask_loss", '''
def sigmoid_mask_loss(mask_logits, labels, mask_targets):
    targets = np.broadcast_to(np.asarray(mask_targets)[:, None], np.shape(mask_logits))
    return binary_cross_entropy_with_logits(mask_logits, targets)             # every channel trained
''', "looks like: the mask loss over all K channels"),
    "+1 pixel width (box_area)": ("01_iou", "box_area", '''
def box_area(boxes):
    boxes = np.asarray(boxes, float)
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
''', "looks like: the +1 pixel width"),
    "x and y swapped (box_encode)": ("01_iou", "box_encode", '''
from mrcnn_edu.boxes import box_encode as _library_encode

def box_encode(reference, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    return _library_encode(reference, targets, weights)[:, [1, 0, 3, 2]]
''', "looks like: x and y swapped: every box"),
    "anchors at cell centres (generate_anchors)": ("02_anchors", "generate_anchors", '''
from mrcnn_edu.anchors import generate_anchors as _library_anchors

def generate_anchors(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                     dtype="float32"):
    return _library_anchors(image_size, stride, sizes, ratios, 0.5, dtype)      # always the cell's centre
''', "looks like: anchors centred in the cells where offset=0"),
    "x and y swapped (roi_align)": ("04_roi", "roi_align", '''
from mrcnn_edu.roi import roi_align as _library_roi_align

def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    rois = np.asarray(rois)[:, [0, 2, 1, 4, 3]]                               # read as (y1, x1, y2, x2)
    return _library_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
''', "looks like: x and y swapped: each RoI read as"),
    "kernel flipped in the forward (conv2d)": ("06_layers", "conv2d", '''
from mrcnn_edu.nn.functional import conv2d as _library_conv2d

def conv2d(x, w, b=None, stride=1, padding=0):
    return _library_conv2d(x, np.ascontiguousarray(np.asarray(w)[:, :, ::-1, ::-1]), b, stride, padding)
''', "looks like: the kernel flipped in the forward"),
}
FIRST_ROUND = list(PLANTS)[:8]
SECOND_ROUND = list(PLANTS)[8:]

# Cases the lesson tests of this commit do not have, written as a lesson test would be.
PROBES = {
    "01_iou": '''
import numpy as np
from _grading import expect_equal
from mrcnn_edu import boxes as lib

TASKS = {5: "nms"}


def test_task5_probe_ties_keep_their_order(impl):
    boxes = np.array([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])      # disjoint
    scores = np.array([0.5, 0.9, 0.5])
    expect_equal(impl.nms(boxes, scores, 0.5), lib.nms(boxes, scores, 0.5),
                 "nms of 3 disjoint boxes, boxes 0 and 2 tied at .5: all kept, the tie in input order",
                 inputs=dict(boxes=boxes, scores=scores, iou_threshold=0.5))
''',
    "04_roi": '''
import numpy as np
from _grading import expect_close
from mrcnn_edu import roi as lib

TASKS = {2: "roi_pool"}


def test_task2_probe_corners_on_halves(impl):
    features = np.arange(64.0).reshape(1, 1, 8, 8) % 7
    rois = np.array([[0.0, 0.5, 2.5, 4.5, 6.5]])
    output, _ = impl.roi_pool(features, rois, 2)
    expect_close(output, lib.roi_pool(features, rois, 2)[0], "roi_pool 2x2 of the RoI (0.5, 2.5, 4.5, 6.5): corners "
                 "on halves, rounded away from zero", inputs=dict(features=features, rois=rois, output_size=2))
''',
}


def plant_tree(tmp_path, names):
    """A copy of ``lessons/`` whose working copies carry the mistakes ``names`` (and the probes)."""
    tree = tmp_path / "lessons"
    shutil.copytree(LESSONS, tree, ignore=shutil.ignore_patterns("exercise_work.py", "__pycache__"))
    for name in names:
        lesson, _, code, _ = PLANTS[name]
        work = tree / lesson / "exercise_work.py"
        if not work.exists():
            work.write_text((tree / lesson / "reference.py").read_text() + "\nimport numpy as np\n")
        work.write_text(work.read_text() + "\n" + code)
    for lesson, code in PROBES.items():
        (tree / lesson / f"test_{lesson}_probe.py").write_text(code)
    return tree


def graded(tmp_path_factory, names):
    tree = plant_tree(tmp_path_factory.mktemp("planted"), names)
    result = lessons.check(root=tree, quiet=True, timeout=300)
    return tree, result, lessons.format_report(result)


@pytest.fixture(scope="module")
def first_round(tmp_path_factory):
    return graded(tmp_path_factory, FIRST_ROUND)


@pytest.fixture(scope="module")
def second_round(tmp_path_factory):
    return graded(tmp_path_factory, SECOND_ROUND)


def section(report: str, lesson: str, function: str) -> str:
    """The diagnosis of one task in ``check``'s report: from its heading to the next heading."""
    lines = report.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith(f"{lesson}, task ") and
                 line.split(", ")[2].startswith(f"{function}:")), None)
    assert head is not None, f"no diagnosis of {lesson} {function} in:\n{report}"
    end = next((i for i in range(head + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[head:end])


def row_of(result, lesson, function):
    les = next(le for le in result["lessons"] if le["lesson"] == lesson)
    return next(row for row in les["tasks"] if row["function"] == function)


@pytest.mark.parametrize("name", FIRST_ROUND)
def test_each_planted_mistake_is_named(first_round, name):
    _, result, report = first_round
    lesson, function, _, diagnosis = PLANTS[name]
    assert row_of(result, lesson, function)["status"] == "failed", report
    assert diagnosis in section(report, lesson, function), report


@pytest.mark.parametrize("name", SECOND_ROUND)
def test_each_planted_mistake_is_named_second_round(second_round, name):
    _, result, report = second_round
    lesson, function, _, diagnosis = PLANTS[name]
    assert row_of(result, lesson, function)["status"] == "failed", report
    assert diagnosis in section(report, lesson, function), report


def test_only_the_planted_functions_fail(first_round):
    _, result, report = first_round
    planted = {(PLANTS[n][0], PLANTS[n][1]) for n in FIRST_ROUND}
    for les in result["lessons"]:
        for row in les["tasks"]:
            if row["status"] not in ("no working copy",):
                assert (row["status"] == "failed") == ((les["lesson"], row["function"]) in planted), report


def test_the_table_comes_first_then_every_failing_case(first_round):
    _, result, report = first_round
    assert report.index("Score:") < report.index("What went wrong, task by task")
    table = report[:report.index("What went wrong")]
    assert "failed  (looks like: +1 pixel width)" in table       # the table row names the mistake too
    row = row_of(result, "01_iou", "box_iou")
    text = section(report, "01_iou", "box_iou")
    assert len(row["cases"]) >= 4 and f"{len(row['cases'])} of {row['tests']} tests failed" in text
    for number, case in enumerate(row["cases"], 1):            # every failing case listed, by number
        assert f"  {number}. {case['case']}" in text


def test_a_case_shows_its_inputs(first_round):
    _, _, report = first_round
    text = section(report, "01_iou", "nms")
    assert "inputs:" in text and "iou_threshold = 0.5" in text and "scores" in text
    assert "expected (shape (3,), int64)" in text and "[1  0  2 ]" in text and "[1  2* 0*]" in text


def test_dx_rotated_by_180_degrees_is_said(first_round):
    _, _, report = first_round
    text = section(report, "06_layers", "conv2d_backward")
    cases = re.split(r"\n  \d+\. ", text)[1:]
    by_hand = next(c for c in cases if "dx rotated by 180 degrees" in c)   # the by-hand case: dout = ones
    assert by_hand.count("looks like:") == 1                    # one line per mistake
    assert "looks like: the kernel not flipped" in text         # the random cases: a stride and padding each


def test_pytest_itself_prints_the_diagnosis(second_round):
    tree, _, _ = second_round
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tree / "05_losses"), "--impl=exercise", "-q",
                           "-p", "no:cacheprovider", f"--rootdir={tree.parent}", "-k", "task4_by_hand"],
                          cwd=tree.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "looks like: the mask loss over all K channels" in proc.stdout, proc.stdout
    assert "inputs:" in proc.stdout and "mask_logits" in proc.stdout


# ---------------------------------------------------------------------------------------------------------
# the messages, in process
# ---------------------------------------------------------------------------------------------------------

def failure(fn, *args, **kwargs) -> _grading.GradingFailure:
    with pytest.raises(_grading.GradingFailure) as info:
        fn(*args, **kwargs)
    return info.value


def test_an_8x8_map_is_printed_whole_with_the_wrong_entry_marked():
    expected = np.zeros((8, 8))
    expected[5, 6] = 2.0
    got = np.zeros((8, 8))
    got[5, 6] = 1.0
    text = str(failure(_grading.expect_close, got, expected, "a map"))
    assert "..." not in text
    assert "1 of 64 values differ, at (5, 6): expected 2, got 1" in text
    rows = [line for line in text.splitlines() if line.strip().startswith(("[[", "["))]
    assert len(rows) == 16                                       # expected and got, 8 rows each
    assert rows[8 + 5].split()[6] == "1*" and rows[5].split()[6] == "2"
    assert text.count("*") == 1 + text.count("* marks")


def test_values_that_differ_past_4_decimals_are_printed_with_more():
    text = str(failure(_grading.expect_close, [[0.12341, 1.0]], [[0.12342, 1.0]], "close values"))
    assert "1 of 2 values differ, at (0, 0): expected 0.12342, got 0.12341" in text
    assert "[[0.12341*       1 ]]" in text


def test_a_big_array_is_summarized_with_the_wrong_positions():
    expected = np.arange(600.0).reshape(20, 30)
    got = expected.copy()
    got[3, 4] += 1
    got[17, 29] -= 5
    text = str(failure(_grading.expect_close, got, expected, "a big one"))
    assert "2 of 600 values differ, at (3, 4): expected 94, got 95; at (17, 29): expected 539, got 534" in text
    assert "an array of shape (20, 30), float64" in text


def test_the_task_function_is_found_from_the_test_name():
    # a lesson test module in miniature: TASKS, and a test named test_task<N>_ that calls a helper
    module = {"TASKS": {3: "box_encode"}, "expect_close": _grading.expect_close}
    exec("def test_task3_encode(got, want):\n    expect_close(got, want, 'swapped')\n", module)
    from mrcnn_edu.boxes import box_encode

    want = box_encode(np.array([[0.0, 0, 10, 10]]), np.array([[5.0, 5, 15, 25]]))
    err = failure(module["test_task3_encode"], want[:, [1, 0, 3, 2]], want)
    assert "looks like: x and y swapped" in str(err) and err.looks_like == ["x and y swapped"]


def test_generic_mistakes_sum_for_mean_and_sign():
    expected = np.array([[0.5, -0.25], [0.125, 1.0]])
    assert "every value is the expected times 4" in str(failure(_grading.expect_close, 4 * expected, expected, "x"))
    assert "the sign is flipped" in str(failure(_grading.expect_close, -expected, expected, "x"))
    assert "NaN or inf" in str(failure(_grading.expect_close, np.full((2, 2), np.nan), expected, "x"))


def test_the_diagnosis_never_breaks_a_failure():
    # inputs the mistakes cannot use (wrong names, wrong shapes): the failure is still the plain one
    err = failure(_grading.expect_equal, [0, 1], [1, 0], "nms of nonsense", function="nms",
                  inputs=dict(boxes="not boxes", scores=None, iou_threshold=object()))
    assert "expected (shape (2,), int64)" in str(err)


def test_the_helpers_keep_their_positional_signatures():
    _grading.expect_close([1.0], [1.0 + 1e-7], "a", 1e-6, 1e-8)
    _grading.expect_equal([1, 2], [1, 2], "b")
    _grading.expect_true(True, "c", "d")
    x = np.array([1.0, 2.0])
    _grading.expect_gradient(2 * x, lambda v: v ** 2, x, "e", 1.0, 1e-6, 1e-6)


# ---------------------------------------------------------------------------------------------------------
# every registered mistake, in process: a wrong answer made by hand on inputs that show it is named
# ---------------------------------------------------------------------------------------------------------

def _registry_cases():
    from mrcnn_edu import anchors, boxes, losses, roi
    from mrcnn_edu.nn import functional

    rng = np.random.default_rng(0)
    b1 = np.array([[0.0, 0, 4, 2], [1, 1, 5, 6]])
    b2 = np.array([[2.0, 1, 6, 4], [0, 0, 3, 3], [1, 2, 2, 5]])
    ref, tgt = np.array([[0.0, 0, 10, 10], [2, 3, 8, 12]]), np.array([[5.0, 5, 15, 25], [1, 1, 6, 6]])
    tie_boxes = np.array([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 0, 3, 1], [1, 0, 4, 1]])
    tie_scores = np.array([0.5, 0.9, 0.5, 0.2, 0.3])
    lecture = np.arange(64.0).reshape(1, 1, 8, 8) % 7 / 7
    noise = rng.normal(size=(1, 1, 8, 8))
    rois = np.array([[0.0, 0.5, 2.5, 4.5, 6.5], [0.0, 1.2, 0.3, 6.7, 5.1]])
    small_rois = np.array([[0.0, 1.2, 1.3, 1.6, 1.5]])
    logits = rng.normal(size=(2, 3, 3, 3))
    labels, targets = np.array([1, 2]), (rng.uniform(size=(2, 3, 3)) > 0.5).astype(float)
    x, w = rng.normal(size=(1, 2, 4, 5)), rng.normal(size=(3, 2, 2, 3))
    dout = rng.normal(size=(1, 3, 3, 3))
    pooled = np.arange(16.0).reshape(1, 1, 4, 4) % 5
    _, argmax = roi.roi_pool(pooled, np.array([[0.0, 0, 0, 3, 3]]), 3)
    a = lambda **kw: kw   # noqa: E731
    return [
        # function, inputs, expected, got, the diagnosis
        ("box_area", a(boxes=b1), boxes.box_area(b1), (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1),
         "+1 pixel"),
        ("box_iou", a(boxes1=b1, boxes2=b2), boxes.box_iou(b1, b2), _grading._iou_plus_one(b1, b2), "+1 pixel"),
        ("box_iou", a(boxes1=b1, boxes2=b2), boxes.box_iou(b1, b2),
         (lambda i, u: i / (u + i))(*boxes._inter_union(b1, b2)), "counts the intersection twice"),
        ("box_encode", a(reference=ref, targets=tgt), boxes.box_encode(ref, tgt),
         _grading._encode_plus_one(ref, tgt), "+1 pixel"),
        ("box_encode", a(reference=ref, targets=tgt), boxes.box_encode(ref, tgt),
         boxes.box_encode(ref, tgt)[:, [1, 0, 3, 2]], "x and y swapped"),
        ("box_decode", a(deltas=np.array([[0.0, 0, 10, 0]]), reference=ref[:1]),
         boxes.box_decode(np.array([[0.0, 0, 10, 0]]), ref[:1]),
         boxes.box_decode(np.array([[0.0, 0, 10, 0]]), ref[:1], clip=np.inf), "not clamped"),
        ("box_decode", a(deltas=np.array([[0.5, 0.1, 0.2, 0.0]]), reference=ref[:1]),
         boxes.box_decode(np.array([[0.5, 0.1, 0.2, 0.0]]), ref[:1]),
         boxes.box_decode(np.array([[0.1, 0.5, 0.0, 0.2]]), ref[:1]), "read as (dy, dx, dh, dw)"),
        ("nms", a(boxes=tie_boxes, scores=tie_scores, iou_threshold=0.5), boxes.nms(tie_boxes, tie_scores, 0.5),
         np.array([1, 2, 0, 4, 3]), "an unstable sort"),
        ("nms", a(boxes=tie_boxes, scores=tie_scores, iou_threshold=0.5), boxes.nms(tie_boxes, tie_scores, 0.5),
         np.array([1, 0, 2, 4]), "IoU exactly at the threshold"),  # box 3 has IoU 0.5 with box 4
        ("nms", a(boxes=tie_boxes, scores=tie_scores, iou_threshold=0.5), boxes.nms(tie_boxes, tie_scores, 0.5),
         np.sort(boxes.nms(tie_boxes, tie_scores, 0.5)), "sorted by index"),
        ("grid_size", a(image_size=(100, 70), stride=16), [7, 5], [5, 7], "(columns, rows)"),
        ("grid_size", a(image_size=(100, 70), stride=16), [7, 5], [6, 4], "floor instead of ceil"),
        ("base_anchors", a(), anchors.base_anchors(), _grading._base_unrounded(), "not rounded"),
        ("generate_anchors", a(image_size=(32, 48), stride=16, sizes=(16,), ratios=(0.5,)),
         anchors.generate_anchors((32, 48), 16, (16,), (0.5,)), anchors.generate_anchors((48, 32), 16, (16,), (0.5,)),
         "image_size read as (width, height)"),
        ("generate_anchors", a(image_size=(32, 48), stride=16, sizes=(16, 32), ratios=(0.5,)),
         anchors.generate_anchors((32, 48), 16, (16, 32), (0.5,)),
         anchors.generate_anchors((32, 48), 16, (16, 32), (0.5,)).reshape(2, 3, 2, 4).transpose(1, 0, 2, 3)
         .reshape(-1, 4),
         "another order"),
        ("roi_pool", a(features=lecture, rois=rois, output_size=2), roi.roi_pool(lecture, rois, 2)[0],
         roi.roi_pool(lecture, rois, 2, bins="slides")[0], "the other bin rule"),
        ("roi_pool", a(features=noise, rois=rois, output_size=2), roi.roi_pool(noise, rois, 2)[0],
         roi.roi_pool(noise, rois[:, [0, 2, 1, 4, 3]], 2)[0], "each RoI read as"),
        ("roi_pool", a(features=lecture, rois=rois * 2, output_size=2, spatial_scale=0.5),
         roi.roi_pool(lecture, rois * 2, 2, 0.5)[0], roi.roi_pool(lecture, rois * 2, 2)[0],
         "spatial_scale not applied"),
        ("roi_pool_backward", a(grad_output=np.ones((1, 1, 3, 3)), argmax=argmax, input_shape=(1, 1, 4, 4)),
         roi.roi_pool_backward(np.ones((1, 1, 3, 3)), argmax, (1, 1, 4, 4)),
         _grading._pool_backward_assign(np.ones((1, 1, 3, 3)), argmax, (1, 1, 4, 4)), "np.add.at"),
        ("roi_align", a(features=lecture, rois=rois, output_size=2, aligned=True),
         roi.roi_align(lecture, rois, 2, aligned=True), roi.roi_align(lecture, rois + [0, 1, 1, 1, 1], 2, aligned=True),
         "shifted the wrong way"),
        ("roi_align", a(features=lecture, rois=small_rois, output_size=2, aligned=True),
         roi.roi_align(lecture, small_rois, 2, aligned=True),
         roi.roi_align(lecture, np.array([[0.0, 1.2, 1.3, 2.2, 2.3]]), 2, aligned=True), "at least 1 x 1"),
        ("roi_align", a(features=lecture, rois=rois * 4, output_size=2, spatial_scale=0.25),
         roi.roi_align(lecture, rois * 4, 2, 0.25), roi.roi_align(lecture, rois * 4, 2), "spatial_scale not applied"),
        ("roi_align_backward", a(grad_output=np.ones((2, 1, 2, 2)), rois=rois, input_shape=(1, 1, 8, 8), output_size=2),
         roi.roi_align_backward(np.ones((2, 1, 2, 2)), rois, (1, 1, 8, 8), 2),
         roi.roi_align_backward(np.ones((2, 1, 2, 2)), rois, (1, 1, 8, 8), 2, aligned=True), "`aligned` off"),
        ("roi_align_backward", a(grad_output=np.ones((2, 1, 2, 2)), rois=rois, input_shape=(1, 1, 8, 8), output_size=2),
         roi.roi_align_backward(np.ones((2, 1, 2, 2)), rois, (1, 1, 8, 8), 2),
         roi.roi_align_backward(np.ones((2, 1, 2, 2)), rois[:, [0, 2, 1, 4, 3]], (1, 1, 8, 8), 2), "each RoI read as"),
        ("softmax_mask_loss", a(mask_logits=logits, labels=labels, mask_targets=targets),
         losses.softmax_mask_loss(logits, labels, targets)[1], losses.sigmoid_mask_loss(logits, labels, targets)[1],
         "a per-class sigmoid"),
        ("smooth_l1_loss", a(pred=logits.ravel(), target=np.zeros(54), beta=1 / 9),
         losses.smooth_l1_loss(logits.ravel(), np.zeros(54), 1 / 9)[0],
         losses.smooth_l1_loss(logits.ravel(), np.zeros(54))[0],
         "beta ignored"),
        ("conv2d", a(x=x, w=w), functional.conv2d(x, w)[0], functional.conv2d(x, w[:, :, ::-1, ::-1].copy())[0],
         "the kernel flipped in the forward"),
        ("conv2d_backward", a(x=x, w=w, dout=dout), functional.conv2d_backward(dout, functional.conv2d(x, w)[1])[0],
         functional.conv2d_backward(dout, functional.conv2d(x, w[:, :, ::-1, ::-1].copy())[1])[0],
         "the kernel not flipped"),
    ]


REGISTRY_CASES = _registry_cases()


@pytest.mark.parametrize("function, inputs, expected, got, says", REGISTRY_CASES,
                         ids=[f"{c[0]}: {c[4]}" for c in REGISTRY_CASES])
def test_every_registered_mistake_is_recognised(function, inputs, expected, got, says):
    got_, expected_ = np.asarray(got, float), np.asarray(expected, float)
    assert got_.shape != expected_.shape or not np.allclose(got_, expected_), "the case must show the mistake"
    found = _grading.diagnose(function, inputs, expected, got, same=_grading._close(1e-6, 1e-9))
    assert any(says in m.says for m in found), [m.says for m in found]


def test_a_right_answer_and_an_unrelated_wrong_one_name_nothing():
    from mrcnn_edu import boxes

    b1, b2 = np.array([[0.0, 0, 4, 2]]), np.array([[2.0, 1, 6, 4], [0, 0, 3, 3]])
    iou = boxes.box_iou(b1, b2)
    same = _grading._close(1e-6, 1e-9)
    assert _grading.diagnose("box_iou", dict(boxes1=b1, boxes2=b2), iou, iou + [[0.01, 0.02]], same=same) == []
