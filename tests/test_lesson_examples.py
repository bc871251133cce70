"""Every worked example of the lessons is a test.

Each number a lesson README asks a student to check by hand (its "A worked example to check by hand", and
the few numbers of "The idea" and "Where the slides are loose" that invite the same) is computed here by
the library. Where the README prints the number in a form a regular expression can read, it is read from
the README, so that the text and the library cannot drift apart: a README edited to say something the
library does not do fails here, and so does a library changed under a README. The expected values are
also written out in the tests, so a README rephrased beyond the patterns fails with "no longer says",
not silently.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from mrcnn_edu import ap, boxes, losses, rpn
from mrcnn_edu.anchors import base_anchors, generate_anchors, grid_size
from mrcnn_edu.data import lecture_feature_map
from mrcnn_edu.heads import paste_masks
from mrcnn_edu.matching import match_by_iou
from mrcnn_edu.nn.conv import col2im, conv2d, conv2d_backward, conv_output_size, im2col
from mrcnn_edu.nn.functional import linear, linear_backward
from mrcnn_edu.optim import WarmupCosineLR
from mrcnn_edu.postprocess import detection_masks, postprocess_detections
from mrcnn_edu.roi import roi_align, roi_pool, roi_pool_backward
from mrcnn_edu.roi_heads import box_head_targets, fast_rcnn_loss, mask_targets

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:e-?\d+)?"


# ---------------------------------------------------------------------------------------------------------
# reading the READMEs
# ---------------------------------------------------------------------------------------------------------

def readme(lesson: str) -> str:
    return (LESSONS / lesson / "README.md").read_text(encoding="utf-8")


def flat(text: str) -> str:
    """The text with every run of white space one space (a pattern then ignores line breaks)."""
    return " ".join(text.split())


def find(lesson: str, pattern: str, flags=0):
    """The groups of ``pattern`` in lesson's README (white space normalized), or a failure that says where."""
    match = re.search(pattern, flat(readme(lesson)), flags)
    assert match, f"lessons/{lesson}/README.md no longer says what this test reads (pattern {pattern!r}); " \
                  "update the test with the README"
    return match.groups()


def numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(NUMBER, text)]


def tuple_of(text: str) -> tuple:
    return tuple(numbers(text))


def tolerance(printed: str) -> float:
    """Half a unit of the last digit the README prints (``0.1429`` -> 5e-5, ``1.0007e-3`` -> 5e-8)."""
    mantissa, _, exponent = printed.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (-decimals) * 10.0 ** (int(exponent) if exponent else 0) * (1 + 1e-9)


def agrees(got, printed: str, what: str):
    """``got`` rounds to the number the README prints."""
    assert abs(float(got) - float(printed)) <= tolerance(printed), \
        f"{what}: the README prints {printed}, the library gives {float(got):.10g}"


# ---------------------------------------------------------------------------------------------------------
# lesson 01: IoU, encoding, NMS
# ---------------------------------------------------------------------------------------------------------

def test_01_the_lectures_iou_picture():
    b1, b2 = find("01_iou", r"`B1 = (\([^)]*\))` and `B2 = (\([^)]*\))`")
    inter, union, iou = find("01_iou", r"`IoU = (\d+) / (\d+) = 1/7 ≈ (" + NUMBER + r")`")
    got = boxes.box_iou(np.array([tuple_of(b1)]), np.array([tuple_of(b2)]))[0, 0]
    assert tuple_of(b1) == (0, 0, 100, 100) and tuple_of(b2) == (50, 50, 150, 150)
    agrees(got, iou, "IoU of B1 and B2")
    assert got == pytest.approx(1 / 7) and float(inter) / float(union) == pytest.approx(got)
    areas = boxes.box_area(np.array([tuple_of(b1), tuple_of(b2)]))
    # the union the IoU implies: areas - intersection, with intersection = IoU * union
    assert areas.sum() / (1 + got) == pytest.approx(float(union)) == 17500
    assert got * float(union) == pytest.approx(float(inter)) == 2500


def test_01_the_smaller_iou():
    a, area_a, b, area_b, inter_box = find(
        "01_iou", r"A smaller one: `(\([^)]*\))` \(area (\d+)\) and `(\([^)]*\))` \(area (\d+)\) intersect in "
                  r"`(\([^)]*\))`")
    got_areas = boxes.box_area(np.array([tuple_of(a), tuple_of(b), tuple_of(inter_box)]))
    assert list(got_areas) == [float(area_a), float(area_b), 2.0] == [8, 12, 2]
    iou = boxes.box_iou(np.array([tuple_of(a)]), np.array([tuple_of(b)]))[0, 0]
    find("01_iou", r"IoU `= 2 / \(8 \+ 12 - 2\) = 1/9`")
    assert iou == pytest.approx(1 / 9)


def test_01_encoding_the_target():
    target, anchor = find("01_iou", r"Encoding the target `(\([^)]*\))` against the anchor `(\([^)]*\))`")
    plain, weighted = find("01_iou", r"= (\(0\.5, 1, 0, " + NUMBER + r"\))`; with weights `\(10, 10, 5, 5\)` it is "
                                     r"`(\([^)]*\))`")
    reference, targets = np.array([tuple_of(anchor)]), np.array([tuple_of(target)])
    got = boxes.box_encode(reference, targets)[0]
    got_weighted = boxes.box_encode(reference, targets, (10.0, 10.0, 5.0, 5.0))[0]
    for g, p, name in zip(got, plain.strip("()").split(", "), "dx dy dw dh".split()):
        agrees(g, p, f"box_encode {name}")
    for g, p, name in zip(got_weighted, weighted.strip("()").split(", "), "dx dy dw dh".split()):
        agrees(g, p, f"box_encode with weights (10, 10, 5, 5) {name}")
    np.testing.assert_allclose(got, [0.5, 1.0, 0.0, math.log(2)])
    np.testing.assert_allclose(got_weighted, [5.0, 10.0, 0.0, 5 * math.log(2)])
    np.testing.assert_allclose(boxes.box_decode(got[None], reference)[0], tuple_of(target))


def test_01_decoding_grows_a_box_at_most_62_5_times():
    factor, = find("01_iou", r"a box may grow at most (" + NUMBER + r") times")
    decoded = boxes.box_decode(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[0.0, 0.0, 16.0, 16.0]]))[0]
    width, height = decoded[2] - decoded[0], decoded[3] - decoded[1]
    assert width / 16 == pytest.approx(float(factor)) == height / 16 == pytest.approx(62.5)


def test_01_nms_chain():
    a, sa, b, sb, c, sc = find("01_iou", r"`A = (\([^)]*\))` \(score (" + NUMBER + r")\), `B = (\([^)]*\))` \((" +
                               NUMBER + r")\) and `C = (\([^)]*\))` \((" + NUMBER + r")\)")
    threshold, = find("01_iou", r"NMS at threshold (" + NUMBER + r") on `A")
    find("01_iou", r"The answer is A then C")
    bxs = np.array([tuple_of(a), tuple_of(b), tuple_of(c)])
    iou = boxes.box_iou(bxs, bxs)
    assert iou[0, 1] == pytest.approx(1 / 3) and iou[0, 2] == 0 and iou[1, 2] == pytest.approx(1 / 3)
    keep = boxes.nms(bxs, np.array([float(sa), float(sb), float(sc)]), float(threshold))
    assert keep.tolist() == [0, 2]


# ---------------------------------------------------------------------------------------------------------
# lesson 02: anchors
# ---------------------------------------------------------------------------------------------------------

def test_02_the_lectures_grid():
    cols, rows_exact, rows, cells, anchors = find(
        "02_anchors", r"`800 / 16 = (\d+)` columns and `600 / 16 = (" + NUMBER + r")`, rounded up to (\d+) rows, so "
                      r"the grid has `\d+ \* \d+ = (\d+)` cells and `\d+ \* 9 = (\d+)` anchors")
    assert grid_size((600, 800)) == (int(rows), int(cols)) == (38, 50)
    assert float(rows_exact) == 600 / 16
    assert int(cells) == 38 * 50 == 1900
    assert generate_anchors((600, 800)).shape == (int(anchors), 4) == (17100, 4)


def test_02_the_nine_base_anchors_table():
    text = readme("02_anchors")
    rows = re.findall(r"^\| (" + NUMBER + r") \| (\([^)]*\)) \| (\([^)]*\)) \| (\([^)]*\)) \|$", text, re.M)
    assert [float(r[0]) for r in rows] == [0.5, 1.0, 2.0], "lessons/02_anchors/README.md: the base-anchor table"
    table = np.array([tuple_of(cell) for row in rows for cell in row[1:]])
    np.testing.assert_array_equal(base_anchors(), table)


def test_02_check_one_base_anchor():
    h_r, w, h, half_w, half_h, side_w, side_h, area = find(
        "02_anchors", r"size 128, ratio 0\.5: `h_r = (" + NUMBER + r")`, `w = (" + NUMBER + r")`, `h = (" + NUMBER +
                      r")`, and half of them rounded is `\((\d+), (\d+)\)`\. The area is `(\d+) \* (\d+) = (\d+)`")
    agrees(math.sqrt(0.5), h_r, "h_r")
    agrees(128 / math.sqrt(0.5), w, "w")
    agrees(128 * math.sqrt(0.5), h, "h")
    first = base_anchors()[0]
    assert tuple(first) == (-float(half_w), -float(half_h), float(half_w), float(half_h)) == (-91, -45, 91, 45)
    assert boxes.box_area(first[None])[0] == int(side_w) * int(side_h) == int(area) == 16380


def test_02_anchor_1417():
    index, base, cell, row, col, shift, anchor = find(
        "02_anchors", r"Anchor number `9 \* \(3 \* 50 \+ 7\) \+ 4 = (\d+)` is base anchor (\d+) .*? of cell "
                      r"`\d+ // 9 = (\d+)`, row `\d+ // 50 = (\d+)`, column `\d+ % 50 = (\d+)`, shifted by "
                      r"`\(7 \* 16, 3 \* 16\) = (\([^)]*\))`[^`]*?(?:`offset=0`)?: `(\([^)]*\))`")
    index = int(index)
    assert index == 9 * (3 * 50 + 7) + 4 and (index % 9, index // 9) == (int(base), int(cell))
    assert (int(cell) // 50, int(cell) % 50) == (int(row), int(col)) == (3, 7)
    got = generate_anchors((600, 800))[index]
    np.testing.assert_array_equal(got, np.array(tuple_of(anchor)))
    np.testing.assert_array_equal(got - base_anchors()[int(base)], np.array(tuple_of(shift) * 2))
    assert tuple(got) == (-16, -80, 240, 176)


def test_02_anchor_1417_centred_in_its_cell():
    move, anchor, centre = find("02_anchors", r"With `offset=0\.5` every anchor moves by another `(\([^)]*\))`: "
                                              r"`(\([^)]*\))`, centred on `(\([^)]*\))`")
    got = generate_anchors((600, 800), offset=0.5)[1417]
    np.testing.assert_array_equal(got - generate_anchors((600, 800))[1417], tuple_of(move) * 2)
    np.testing.assert_array_equal(got, tuple_of(anchor))
    np.testing.assert_array_equal([(got[0] + got[2]) / 2, (got[1] + got[3]) / 2], tuple_of(centre))
    assert tuple(got) == (-8, -72, 248, 184)


# ---------------------------------------------------------------------------------------------------------
# lesson 03: labels, loss
# ---------------------------------------------------------------------------------------------------------

def lesson03_iou_table():
    text = readme("03_rpn")
    rows = re.findall(r"^\| gt (\d) \|((?: " + NUMBER + r" \|)+)$", text, re.M)
    assert [int(r[0]) for r in rows] == [0, 1], "lessons/03_rpn/README.md: the 2 x 7 IoU table"
    return np.array([numbers(r[1]) for r in rows])


def test_03_matches_and_labels(monkeypatch):
    iou = lesson03_iou_table()
    matches, labels = find("03_rpn", r"Matches: `(\[[^\]]*\])`; labels `(\[[^\]]*\])`")
    np.testing.assert_array_equal(match_by_iou(iou), numbers(matches))
    assert numbers(matches) == [0, 0, -2, 1, -1, -1, 1]
    # label_anchors on the table itself: the IoU of 7 stand-in anchors with 2 stand-in boxes is the table
    monkeypatch.setattr(rpn, "_box_iou", lambda gt, anchors: iou)
    got_labels, got_matches = rpn.label_anchors(np.tile([[0.0, 0, 1, 1]], (7, 1)), np.tile([[0.0, 0, 1, 1]], (2, 1)))
    np.testing.assert_array_equal(got_labels, numbers(labels))
    np.testing.assert_array_equal(got_matches, numbers(matches))
    assert numbers(labels) == [1, 1, -1, 1, 0, 0, 1]


def test_03_the_loss_on_three_anchors():
    logits, labels, s = find("03_rpn", r"logits `(\([^)]*\))`, labels `(\([^)]*\))`, so `S = (\d+)`")
    loss_obj, grad = find("03_rpn", r"The objectness loss is `\(log 2 \+ log 2\) / 2 = (" + NUMBER + r")`, and its "
                                    r"gradient `\(\(0\.5 - 1\) / 2, \(0\.5 - 0\) / 2, 0\) = (\([^)]*\))`")
    miss, inside, outside, box_sum, box = find(
        "03_rpn", r"miss their target by `(\([^)]*\))`, smooth-L1 with `β = 1/9` gives `0\.5 \* 0\.01 / \(1/9\) = (" +
                  NUMBER + r")` \(inside β\) and `0\.5 - 0\.5/9 = (" + NUMBER + r")` \(outside\), so `L_box = (" +
                  NUMBER + r") / 2 = (" + NUMBER + r")`")
    objectness = np.array(tuple_of(logits))
    lab = np.array(tuple_of(labels))
    deltas = np.zeros((3, 4))
    targets = np.zeros((3, 4))
    targets[0] = -np.array(tuple_of(miss))          # deltas - targets = the miss
    lo, lb, dobj, ddeltas = rpn.rpn_loss(objectness, deltas, lab, targets)
    assert int(s) == int((lab >= 0).sum()) == 2
    agrees(lo, loss_obj, "loss_objectness")
    np.testing.assert_allclose(dobj, tuple_of(grad))
    per_element, _ = losses.smooth_l1_loss(np.array(tuple_of(miss)), np.zeros(4), beta=1 / 9, reduction="none")
    agrees(per_element[0], inside, "smooth-L1 of -0.1")
    agrees(per_element[3], outside, "smooth-L1 of -0.5")
    agrees(per_element.sum(), box_sum, "the summed box loss")
    agrees(lb, box, "loss_rpn_box")
    assert float(lb) == pytest.approx((0.045 + 0.5 - 0.5 / 9) / 2)


# ---------------------------------------------------------------------------------------------------------
# lesson 04: RoIPool, RoIAlign
# ---------------------------------------------------------------------------------------------------------

def bin_edges(roi, size, bins):
    """The ``[lo, hi)`` pixel ranges of RoIPool's bins, read through the public function: on a map that grows
    to the right and down a bin's maximum is its last pixel, on the negated map its first."""
    H = W = 8
    ramp = (np.arange(H)[:, None] * W + np.arange(W)[None, :]).astype(float)[None, None]
    rois = np.array([(0.0,) + tuple(roi)])
    _, last = roi_pool(ramp, rois, size, bins=bins)
    _, first = roi_pool(-ramp, rois, size, bins=bins)
    last, first = last[0, 0], first[0, 0]
    rows = [(int(first[p, 0] // W), int(last[p, 0] // W) + 1) for p in range(size)]
    cols = [(int(first[0, q] % W), int(last[0, q] % W) + 1) for q in range(size)]
    return rows, cols


def intervals(text):
    return [tuple(int(v) for v in m) for m in re.findall(r"\[(\d+), (\d+)\)", text)]


def test_04_slides_bins_2x2():
    roi, cols_extent, rows_extent, cuts = find(
        "04_roi", r"With the slides' bins, the RoI `\(x1, y1, x2, y2\) = (\([^)]*\))` covers columns 0\.\.6 \(extent "
                  r"(\d+)\) and rows 3\.\.7 \(extent (\d+)\)\. Cut in 2 x 2: (columns .*? and .*?, rows .*? and .*?)\.")
    rows, cols = bin_edges(tuple_of(roi), 2, "slides")
    assert intervals(cuts) == cols + rows == [(0, 3), (3, 7), (3, 5), (5, 8)]
    assert (int(cols_extent), int(rows_extent)) == (7, 5)
    block = re.search(r"The maxima are\s*\n\s*\n((?:\s+" + NUMBER + r"\s+" + NUMBER + r"\s*\n){2})",
                      readme("04_roi"))
    assert block, "lessons/04_roi/README.md: the 2 x 2 maxima block"
    out, argmax = roi_pool(lecture_feature_map()[None, None], np.array([(0.0,) + tuple_of(roi)]), 2, bins="slides")
    np.testing.assert_allclose(out[0, 0], np.array(numbers(block.group(1))).reshape(2, 2))
    where = find("04_roi", r"\((0\.85 at row 3, column 0; 0\.84 at \(3, 3\); 0\.97 at \(7, 2\); 0\.96 at \(5, 6\))\)")
    pairs = [tuple(int(v) for v in p) for p in re.findall(r"(\d), (?:column )?(\d)", where[0].replace("row ", ""))]
    assert [divmod(int(a), 8) for a in argmax[0, 0].ravel()] == pairs == [(3, 0), (3, 3), (7, 2), (5, 6)]


def test_04_slides_bins_3x3():
    roi, values = find("04_roi", r"The RoI `(\([^)]*\))` in 3 x 3 gives the slide's `([^`]*)`")
    out, _ = roi_pool(lecture_feature_map()[None, None], np.array([(0.0,) + tuple_of(roi)]), 3, bins="slides")
    np.testing.assert_allclose(out[0, 0], np.array(numbers(values)).reshape(3, 3))
    np.testing.assert_allclose(out[0, 0], [[0.74, 0.39, 0.34], [0.20, 0.16, 0.73], [0.83, 0.97, 0.88]])


def test_04_caffe_bins_overlap():
    cuts, values = find("04_roi", r"With caffe's bins the same 2 x 2 RoI splits (columns into .*? and rows into "
                                  r".*?): the bins overlap.*? Output `([^`]*)`")
    rows, cols = bin_edges((0, 3, 6, 7), 2, "caffe")
    assert intervals(cuts) == cols + rows == [(0, 4), (3, 7), (3, 6), (5, 8)]
    features = lecture_feature_map()[None, None]
    rois = np.array([[0.0, 0, 3, 6, 7]])
    out, argmax = roi_pool(features, rois, 2, bins="caffe")
    np.testing.assert_allclose(out[0, 0], np.array(numbers(values)).reshape(2, 2))
    np.testing.assert_allclose(out[0, 0], [[0.85, 0.96], [0.97, 0.96]])
    find("04_roi", r"the pixel of 0\.96 receives two gradients")
    grad = roi_pool_backward(np.ones((1, 1, 2, 2)), argmax, features.shape)
    assert grad[0, 0, 5, 6] == 2 and grad.sum() == 4


def test_04_roi_align_on_a_ramp():
    roi, centres_x, centres_y, values = find(
        "04_roi", r"The RoI `(\([^)]*\))` in 2 x 2 has bins 2 wide and 1 high, centred at `x = ([^`]*)` and "
                  r"`y = ([^`]*)`: `([^`]*)`")
    ramp = (10.0 * np.arange(8)[:, None] + np.arange(8)[None, :])[None, None]
    rois = np.array([(0.0,) + tuple_of(roi)])
    want = np.array(numbers(values)).reshape(2, 2)
    np.testing.assert_allclose(want, 10 * np.array(numbers(centres_y))[:, None] + np.array(numbers(centres_x)))
    for ratio in (2, -1, 4):   # any symmetric grid of samples averages to the centre
        np.testing.assert_allclose(roi_align(ramp, rois, 2, sampling_ratio=ratio)[0, 0], want)
    np.testing.assert_allclose(want, [[17, 19], [27, 29]])


def test_04_roi_align_on_a_ramp_aligned():
    centres_x, centres_y, values = find(
        "04_roi", r"With `aligned=True` every sample moves half a pixel up and to the left, so the bin centres are "
                  r"`x = ([^`]*)` and `y = ([^`]*)`: `([^`]*)`")
    ramp = (10.0 * np.arange(8)[:, None] + np.arange(8)[None, :])[None, None]
    want = np.array(numbers(values)).reshape(2, 2)
    np.testing.assert_allclose(want, 10 * np.array(numbers(centres_y))[:, None] + np.array(numbers(centres_x)))
    for ratio in (2, -1):
        got = roi_align(ramp, np.array([[0.0, 1, 1, 5, 3]]), 2, sampling_ratio=ratio, aligned=True)[0, 0]
        np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(want, [[11.5, 13.5], [21.5, 23.5]])


# ---------------------------------------------------------------------------------------------------------
# lesson 05: losses
# ---------------------------------------------------------------------------------------------------------

def test_05_smooth_l1_l2_and_l1_at_half_and_two():
    text = find("05_losses", r"(The slide's smooth-L1 at `x = 0\.5` .*? with gradients `1` and `1`)")[0]
    smooth = re.search(r"is inside: `0\.5 \* 0\.25 = (" + NUMBER + r")`, gradient `(" + NUMBER + r")`; at `x = 2` it "
                       r"is outside: `2 - 0\.5 = (" + NUMBER + r")`, gradient `(" + NUMBER + r")`", text).groups()
    l2 = re.search(r"L2 would say `(" + NUMBER + r")` and `(" + NUMBER + r")`, with gradients `(" + NUMBER +
                   r")` and `(" + NUMBER + r")`", text).groups()
    l1 = re.search(r"L1 `(" + NUMBER + r")` and `(" + NUMBER + r")`, with gradients `(" + NUMBER + r")` and `(" +
                   NUMBER + r")`", text).groups()
    x = np.array([0.5, 2.0])
    loss, grad = losses.smooth_l1_loss(x, np.zeros(2), beta=1.0, reduction="none")
    np.testing.assert_allclose([loss[0], grad[0], loss[1], grad[1]], [float(v) for v in smooth])
    # L2 (0.5 x^2) is smooth-L1 with a beta beyond |x|, times beta; L1 is smooth-L1 with beta 0
    loss2, grad2 = losses.smooth_l1_loss(x, np.zeros(2), beta=10.0, reduction="none")
    np.testing.assert_allclose([10 * loss2[0], 10 * loss2[1], 10 * grad2[0], 10 * grad2[1]], [float(v) for v in l2])
    loss1, grad1 = losses.smooth_l1_loss(x, np.zeros(2), beta=0.0, reduction="none")
    np.testing.assert_allclose([loss1[0], loss1[1], grad1[0], grad1[1]], [float(v) for v in l1])
    rpn_value, = find("05_losses", r"With the RPN's `β = 1/9`, `x = 0\.5` is already outside: `0\.5 - 1/18 = (" +
                      NUMBER + r")`")
    agrees(losses.smooth_l1_loss(np.array([0.5]), np.zeros(1), beta=1 / 9, reduction="sum")[0], rpn_value,
           "smooth-L1 with beta 1/9 at 0.5")


def test_05_bce_at_zero():
    value, obj, not_obj = find("05_losses", r"the loss is `log 2 = (" + NUMBER + r")` and the gradient `0\.5 - t`, "
                                            r"that is `(" + NUMBER + r")` for an object and `\+?(" + NUMBER +
                                            r")` for a not-object")
    loss, grad = losses.binary_cross_entropy_with_logits(np.zeros(2), np.array([1.0, 0.0]), reduction="none")
    agrees(loss[0], value, "BCE at 0, target 1")
    agrees(loss[1], value, "BCE at 0, target 0")
    np.testing.assert_allclose(grad, [float(obj), float(not_obj)])
    np.testing.assert_allclose(grad, [-0.5, 0.5])


def test_05_softmax_of_three_equal_logits():
    value, = find("05_losses", r"so the loss is `log 3 = (" + NUMBER + r")` and the gradient `\(1/3 - 1, 1/3, 1/3\)` "
                               r"for label 0")
    loss, grad = losses.softmax_cross_entropy(np.zeros((1, 3)), np.array([0]))
    agrees(loss, value, "softmax cross-entropy of three equal logits")
    np.testing.assert_allclose(grad[0], [1 / 3 - 1, 1 / 3, 1 / 3])


def test_05_the_mask_losses_of_one_roi():
    target, grad_text = find("05_losses", r"\(K = 3, a 2 x 2 mask with target `([^`]*)`\): every pixel costs "
                                          r"`log 2`, so the mean is `log 2`; the gradient on channel 2 is "
                                          r"`\(0\.5 - t\) / 4 = ([^`]*)`")
    t = np.array(numbers(target)).reshape(1, 2, 2)
    logits = np.zeros((1, 3, 2, 2))
    loss, grad = losses.sigmoid_mask_loss(logits, np.array([2]), t)
    assert float(loss) == pytest.approx(math.log(2))
    np.testing.assert_allclose(grad[0, 2].ravel(), numbers(grad_text))
    np.testing.assert_allclose(grad[0, 2], [[-0.125, 0.125], [0.125, -0.125]])
    assert not grad[0, :2].any(), "channels 0 and 1 get zeros"
    find("05_losses", r"The softmax mask loss of the same input costs `log 3` per pixel, and every channel gets a "
                      r"gradient")
    loss_s, grad_s = losses.softmax_mask_loss(logits, np.array([2]), t)
    assert float(loss_s) == pytest.approx(math.log(3))
    assert (grad_s != 0).all()


# ---------------------------------------------------------------------------------------------------------
# lesson 06: linear, im2col, conv
# ---------------------------------------------------------------------------------------------------------

X3 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
W22 = np.array([[[[1.0, 0.0], [2.0, -1.0]]]])


def test_06_im2col_table():
    rows = re.findall(r"tap \((\d),(\d)\)\s+row:((?:\s+\d+){4})", readme("06_layers"))
    assert len(rows) == 4, "lessons/06_layers/README.md: the im2col table"
    cols = im2col(X3, (2, 2), (1, 1), (0, 0))[0]
    np.testing.assert_array_equal(cols, [numbers(r[2]) for r in rows])
    np.testing.assert_array_equal(cols, [[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]])


def test_06_conv_forward_by_columns():
    lines = re.findall(r"column (\([^)]*\)):\s+([-+\d ]+?) = (-?\d+)\s+\+ 1\s+->\s+(\d+)", readme("06_layers"))
    assert len(lines) == 4, "lessons/06_layers/README.md: the four columns of the conv example"
    cols = im2col(X3, (2, 2), (1, 1), (0, 0))[0]
    np.testing.assert_array_equal(cols.T, [tuple_of(c) for c, _, _, _ in lines])
    np.testing.assert_array_equal(W22.reshape(-1) @ cols, [float(s) for _, _, s, _ in lines])
    out, _ = conv2d(X3, W22, np.array([1.0]))
    np.testing.assert_array_equal(out[0, 0].ravel(), [float(o) for _, _, _, o in lines])
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [11, 13]])


def test_06_conv_backward_of_ones():
    db, = find("06_layers", r"`db = (\d+)`: the bias was added to 4 outputs")
    dw, = find("06_layers", r"so `dW = ([^`]*)`")
    centre, = find("06_layers", r"`-1 \+ 2 \+ 0 \+ 1 = (\d+)`")
    block = re.search(r"dx =((?:\s+-?\d+){3}\s*\n(?:\s+(?:-?\d+\s+){2}-?\d+\s*\n){2})", readme("06_layers"))
    assert block, "lessons/06_layers/README.md: the dx block"
    out, cache = conv2d(X3, W22, np.array([1.0]))
    dx, dW, dB = conv2d_backward(np.ones_like(out), cache)
    assert dB.tolist() == [float(db)] == [4.0]
    np.testing.assert_array_equal(dW.reshape(2, 2), np.array(numbers(dw)).reshape(2, 2))
    np.testing.assert_array_equal(dW.reshape(2, 2), [[12, 16], [24, 28]])
    np.testing.assert_array_equal(dx[0, 0], np.array(numbers(block.group(1))).reshape(3, 3))
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [3, 2, -1], [2, 1, -1]])
    assert dx[0, 0, 1, 1] == float(centre) == 2


def test_06_col2im_counts_the_windows():
    counts, = find("06_layers", r"`col2im` of a block of ones counts how many windows saw each pixel: `([^`]*)`")
    got = col2im(np.ones((1, 4, 4)), (1, 1, 3, 3), (2, 2), (1, 1), (0, 0))[0, 0]
    np.testing.assert_array_equal(got, np.array(numbers(counts)).reshape(3, 3))
    np.testing.assert_array_equal(got, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_06_the_linear_warm_up():
    x, w, b, out, dout, dx, dw, db = find(
        "06_layers", r"`x = (\([^)]*\))`, `W = ([^`]*)`, `b = (\([^)]*\))` gives `out = \([^=]*= (\([^)]*\))`; with "
                     r"`dout = (\([^)]*\))`, `dx = dout W = (\([^)]*\))`, `dW = dout\.T x = ([^`]*)` and "
                     r"`db = (\([^)]*\))`")
    xx, ww, bb = np.array(tuple_of(x))[None], np.array(numbers(w)).reshape(2, 3), np.array(tuple_of(b))
    got, cache = linear(xx, ww, bb)
    np.testing.assert_allclose(got[0], tuple_of(out))
    np.testing.assert_allclose(got[0], [-1.5, 3])
    gx, gw, gb = linear_backward(np.array(tuple_of(dout))[None], cache)
    np.testing.assert_allclose(gx[0], tuple_of(dx))
    np.testing.assert_allclose(gw, np.array(numbers(dw)).reshape(2, 3))
    np.testing.assert_allclose(gb, tuple_of(db))


def test_06_the_resnet_table_sizes():
    first, second = find("06_layers", r"`\(224 \+ 2\*3 - 7\) // 2 \+ 1 = (\d+)`, "
                                      r"`\(112 \+ 2\*1 - 3\) // 2 \+ 1 = (\d+)`")
    assert conv_output_size(224, 7, 2, 3) == int(first) == 112
    assert conv_output_size(112, 3, 2, 1) == int(second) == 56


# ---------------------------------------------------------------------------------------------------------
# lesson 07: box-head targets, its loss, mask targets, paste back
# ---------------------------------------------------------------------------------------------------------

def test_07_box_head_targets():
    labels, matched = find("07_heads", r"labels `(\d(?:, \d)+)`, matched index `(\d(?:, \d)+)`")
    first, = find("07_heads", r"`t = \(0, 10 \* 2\.5 / 5, 0, 5 log 2\) = (\([^)]*\))`")
    second, third, fourth = find("07_heads", r"The second gives `(\([^)]*\))`, the third `(\([^)]*\))`, and the "
                                             r"ground truth itself `(\([^)]*\))`")
    proposals = np.array([[0.0, 0, 10, 5], [0, 0, 10, 4], [20, 20, 30, 30]])
    gt = np.array([[0.0, 0, 10, 10]])
    iou = boxes.box_iou(gt, proposals)[0]
    np.testing.assert_allclose(iou, [0.5, 0.4, 0.0])
    rois, got_labels, targets, got_matched = box_head_targets(proposals, gt, np.array([2]), np.random.default_rng(0))
    np.testing.assert_array_equal(rois, np.vstack([proposals, gt]))
    assert got_labels.tolist() == numbers(labels) == [2, 0, 0, 2]
    assert got_matched.tolist() == numbers(matched) == [0, 0, 0, 0]
    agrees(targets[0, 3], first.strip("()").split(", ")[3], "t_h of the first RoI")
    np.testing.assert_allclose(targets[0, :3], numbers(first)[:3])
    np.testing.assert_allclose(targets[1], [0, 7.5, 0, 5 * math.log(2.5)])
    assert "5 log 2.5" in second
    np.testing.assert_allclose(targets[2], tuple_of(third))
    np.testing.assert_allclose(targets[3], tuple_of(fourth))


def test_07_the_box_heads_loss():
    target, cls_loss, grad = find("07_heads", r"the first RoI's target `(\([^)]*\))`\. `L_cls = log 3 = (" + NUMBER +
                                              r")`, with gradient `\(softmax - onehot\) / 2`, e\.g\. `(\([^)]*\))`")
    inside, outside, total = find("07_heads", r"`0\.5 \* 0\.01 \* 9 = (" + NUMBER + r")`\. The error `0\.5` is "
                                              r"outside: `0\.5 - 1/18 = (" + NUMBER + r")`\. So `L_box = "
                                              r"\(0\.045 \+ 0\.444\) / 2 = (" + NUMBER + r")`")
    col8, col9 = find("07_heads", r"the gradient is `-0\.9 / 2 = (" + NUMBER + r")` in column 8, `\+1 / 2 = (" +
                                  NUMBER + r")`")
    t = np.zeros((2, 4))
    t[0] = tuple_of(target)
    loss_cls, loss_box, dlogits, dbox = fast_rcnn_loss(np.zeros((2, 3)), np.zeros((2, 12)), np.array([2, 0]), t)
    agrees(loss_cls, cls_loss, "L_cls")
    np.testing.assert_allclose(dlogits[0], [1 / 6, 1 / 6, 1 / 6 - 1 / 2])
    assert re.sub(r"\s", "", grad) == "(1/6,1/6,1/6-1/2)"
    per, _ = losses.smooth_l1_loss(np.zeros(2), np.array([0.1, -0.5]), beta=1 / 9, reduction="none")
    agrees(per[0], inside, "smooth-L1 of -0.1")
    agrees(per[1], outside, "smooth-L1 of 0.5")
    agrees(loss_box, total, "L_box")
    want = np.zeros((2, 12))
    want[0, 8], want[0, 9] = float(col8), float(col9)
    np.testing.assert_allclose(dbox, want)


def test_07_mask_targets_aligned_and_not():
    text = readme("07_heads")
    block = re.search(r"aligned=True((?:\s+1){4})\s+aligned=False((?:\s+" + NUMBER + r"){4})\s*\n"
                      r"((?:(?:\s+1){4}(?:\s+" + NUMBER + r"){4}\s*\n){3})", text)
    assert block, "lessons/07_heads/README.md: the aligned=True / aligned=False block"
    lines = [block.group(1) + block.group(2)] + block.group(3).strip("\n").split("\n")
    true_rows = np.array([numbers(line)[:4] for line in lines])
    false_rows = np.array([numbers(line)[4:] for line in lines])
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 2:6, 2:6] = True
    rois = np.array([[2.0, 2, 6, 6]])
    np.testing.assert_allclose(mask_targets(masks, rois, np.array([0]), 4, aligned=True)[0], true_rows)
    np.testing.assert_allclose(mask_targets(masks, rois, np.array([0]), 4, aligned=False)[0], false_rows)
    assert false_rows[3, 3] == 0.25 and (true_rows == 1).all()


PASTE_MASK = np.array([[[0.0, 1.0], [0.0, 1.0]]])
PASTE_ROW = [0, 0, 0, 0.25, 0.75, 0.75, 0.25, 0]        # every image row, scaled by its row weight
PASTE_ROWS = [0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0]       # the row weights, image rows 0..7


def test_07_paste_back_in_the_library():
    got = paste_masks(PASTE_MASK, np.array([[2.0, 2, 6, 6]]), (8, 8))[0]
    np.testing.assert_allclose(got, np.outer(PASTE_ROWS, PASTE_ROW))
    assert not got[0].any() and not got[7].any(), "rows 0 and 7 read nothing (v = -1.25 and 2.25)"


def test_07_paste_back_table_of_the_idea():
    text = readme("07_heads")
    u_line = re.search(r"^\s*u((?:\s+" + NUMBER + r"){8})\s*$", text, re.M)
    reads = re.search(r"^\s*reads\s+(.*)$", text, re.M)
    a_b = re.search(r"a = (" + NUMBER + r") m\[0\] \+ (" + NUMBER + r") m\[1\],\s+b = (" + NUMBER + r") m\[0\] \+ (" +
                    NUMBER + r") m\[1\]", text)
    assert u_line and reads and a_b, "lessons/07_heads/README.md: the u / reads table of the paste back"
    np.testing.assert_allclose(numbers(u_line.group(1)), (np.arange(8) + 0.5 - 2) / 4 * 2 - 0.5)
    a0, a1, b0, b1 = (float(v) for v in a_b.groups())

    def weights(entry):   # the weights of m[0] and m[1] one "reads" entry stands for
        if entry == "a":
            return a0, a1
        if entry == "b":
            return b0, b1
        if entry == "0":
            return 0.0, 0.0
        k, i = re.fullmatch(r"(" + NUMBER + r")m\[(\d)\]", entry).groups()
        return (float(k), 0.0) if i == "0" else (0.0, float(k))

    table = np.array([weights(e) for e in reads.group(1).split()])
    # the library on the masks m = (1, 0) and (0, 1) in every mask row, read at an image row of full weight
    box = np.array([[2.0, 2, 6, 6]])
    m0 = paste_masks(np.array([[[1.0, 0.0], [1.0, 0.0]]]), box, (8, 8))[0, 3]
    m1 = paste_masks(np.array([[[0.0, 1.0], [0.0, 1.0]]]), box, (8, 8))[0, 3]
    np.testing.assert_allclose(np.column_stack([m0, m1]), table)


def test_07_paste_back_worked_example():
    """The worked example's columns, rows and 8 x 8 table are the library's (an earlier text printed the row
    ``0 0 0 .25 .75 1 1 0``, which no image row of the example reads)."""
    columns, rows = find("07_heads", r"the columns read `([^`]*)`\. Along y .*? the rows read `([^`]*)`")
    assert numbers(columns) == PASTE_ROW and numbers(rows) == PASTE_ROWS
    table = re.findall(r"^\s*y = (\d)((?:\s+" + NUMBER + r"){8})\s*$", readme("07_heads"), re.M)
    assert [int(y) for y, _ in table] == list(range(8)), "lessons/07_heads/README.md: the 8 x 8 paste-back table"
    got = paste_masks(PASTE_MASK, np.array([[2.0, 2, 6, 6]]), (8, 8))[0]
    np.testing.assert_allclose(got, [numbers(values) for _, values in table])
    first, last, c0, c1 = find("07_heads", r"Thresholded at 0\.5, the pixels left are rows (\d) to (\d) and columns "
                                           r"(\d) and (\d)")
    ys, xs = np.nonzero(got >= 0.5)
    assert (ys.min(), ys.max()) == (int(first), int(last)) and sorted(set(xs)) == [int(c0), int(c1)]


def test_07_a_solid_mask_covers_the_pixels_of_its_box():
    first, last = find("07_heads", r"A solid 10 x 10 mask in the box `\(10, 10, 20, 20\)`, thresholded at 0\.5, covers "
                                   r"pixels (\d+)\.\.(\d+) here")
    got = paste_masks(np.ones((1, 10, 10)), np.array([[10.0, 10, 20, 20]]), (30, 30))[0] >= 0.5
    covered = np.flatnonzero(got.any(axis=0))
    assert (covered.min(), covered.max()) == (int(first), int(last)) == (10, 19)
    assert got[10:20, 10:20].all() and got.sum() == 100


# ---------------------------------------------------------------------------------------------------------
# lesson 08: postprocessing, masks, the schedule
# ---------------------------------------------------------------------------------------------------------

def lesson08_case():
    text = flat(readme("08_train"))
    m0 = re.search(r"proposal 0: (\([^)]*\)) logits \(ln 2, ln 7, 0\) exp: 2, 7, 1 softmax: ((?:" + NUMBER +
                   r",? ){3})", text)
    m1 = re.search(r"proposal 1: (\([^)]*\)) logits \(ln 9, ln 15, 0\) exp: 9, 15, 1 softmax: ((?:" + NUMBER +
                   r",? ?){3})", text)
    assert m0 and m1, "lessons/08_train/README.md: the two proposals of the worked example"
    proposals = np.array([tuple_of(m0.group(1)), tuple_of(m1.group(1))])
    logits = np.log(np.array([[2.0, 7.0, 1.0], [9.0, 15.0, 1.0]]))
    deltas = np.zeros((2, 12))
    deltas[0, 8] = 1.0          # proposal 0, class 2, dx = 1
    return proposals, logits, deltas, (numbers(m0.group(2)), numbers(m1.group(2)))


def test_08_postprocess_the_worked_example():
    proposals, logits, deltas, softmaxes = lesson08_case()
    from mrcnn_edu.activations import softmax
    np.testing.assert_allclose(softmax(logits, axis=1), softmaxes)
    rows = re.findall(r"^\| proposal (\d), class (\d) \| (\([^)]*\)) \| (" + NUMBER + r") \| ([^|]*) \|$",
                      readme("08_train"), re.M)
    assert len(rows) == 4, "lessons/08_train/README.md: the four candidates"
    decoded = boxes.box_decode(deltas, proposals, (10.0, 10.0, 5.0, 5.0)).reshape(2, 3, 4)
    for p, k, box, score, fate in rows:
        np.testing.assert_allclose(decoded[int(p), int(k)], tuple_of(box))
        assert softmax(logits, axis=1)[int(p), int(k)] == pytest.approx(float(score))
    iou_suppressed, = find("08_train", r"IoU with the 0\.70 box `36 \* 38 / \(1600 \+ 1600 - 1368\) = (" + NUMBER + ")")
    iou_other, = find("08_train", r"it overlaps the 0\.70 box \(IoU (" + NUMBER + r")\)")
    agrees(boxes.box_iou(decoded[0, 1][None], decoded[1, 1][None])[0, 0], iou_suppressed, "IoU of the class-1 boxes")
    agrees(boxes.box_iou(decoded[0, 1][None], decoded[0, 2][None])[0, 0], iou_other, "IoU of the class-2 copy")
    result_boxes, result_scores, result_labels = find(
        "08_train", r"The result: `boxes ((?:\([^)]*\),? ?)+)`, `scores ([\d., ]+)`, `labels ([\d, ]+)`")
    got = postprocess_detections(logits, deltas, proposals, (64, 64))
    np.testing.assert_allclose(got["boxes"], np.array(numbers(result_boxes)).reshape(-1, 4))
    np.testing.assert_allclose(got["scores"], numbers(result_scores))
    assert got["labels"].tolist() == numbers(result_labels) == [1, 2]
    find("08_train", r"With `nms_threshold=0\.8` the 0\.60 box survives too \(0\.747 < 0\.8\); with "
                     r"`score_threshold=0\.15` only the 0\.70 is left")
    looser = postprocess_detections(logits, deltas, proposals, (64, 64), nms_threshold=0.8)
    np.testing.assert_allclose(looser["scores"], [0.7, 0.6, 0.1])
    stricter = postprocess_detections(logits, deltas, proposals, (64, 64), score_threshold=0.15)
    np.testing.assert_allclose(stricter["scores"], [0.7])


def test_08_detection_masks_on_a_box_that_fits_its_grid():
    box, = find("08_train", r"a 4 x 4 box at `(\([^)]*\))` with a 4 x 4 mask puts mask pixel `\(v, u\)` on image "
                            r"pixel `\(1 \+ v, 2 \+ u\)`")
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(1, 3, 4, 4))
    logits[0, 2, 0, 0] = math.log(4)          # exactly at the 0.8 threshold
    got = detection_masks(logits, np.array([2]), np.array([tuple_of(box)]), (8, 8))[0]
    np.testing.assert_array_equal(got[1:5, 2:6], logits[0, 2] >= 0)
    assert got.sum() == (logits[0, 2] >= 0).sum()
    strict = detection_masks(logits, np.array([2]), np.array([tuple_of(box)]), (8, 8), threshold=0.8)[0]
    np.testing.assert_array_equal(strict[1:5, 2:6], logits[0, 2] >= math.log(4) - 1e-12)


def test_08_the_learning_rate_schedule():
    values = find("08_train", r"`T = 4400`: (" + NUMBER + r") at step 0, (" + NUMBER + r") at step 50, (" + NUMBER +
                              r") at step 2200, (" + NUMBER + r") at the end")
    schedule = WarmupCosineLR(2e-3, 4400, warmup_steps=100, warmup_factor=0.001, min_lr=2e-5)
    for step, printed in zip((0, 50, 2200, 4400), values):
        agrees(schedule(step), printed, f"the learning rate at step {step}")


# ---------------------------------------------------------------------------------------------------------
# lesson 09: COCO AP
# ---------------------------------------------------------------------------------------------------------

def lesson09_table():
    rows = re.findall(r"^\| ([A-E]) \| (" + NUMBER + r") \|((?: \**" + NUMBER + r"\** \|){3})$", readme("09_evaluate"),
                      re.M)
    assert [r[0] for r in rows] == list("ABCDE"), "lessons/09_evaluate/README.md: the 5 x 3 IoU table"
    return np.array([numbers(r[2]) for r in rows]), np.array([float(r[1]) for r in rows])


def test_09_the_worked_example():
    ious, scores = lesson09_table()
    tp = ap.match_detections(ious, scores, 0.5)
    assert tp.tolist() == [True, False, True, False, True]
    rows = re.findall(r"^\| (\d) \| ([A-E]) \| (yes|no) \| (\d) \| [^|]*= (" + NUMBER + r") \| (\d)/3 \| (" + NUMBER +
                      r") \|$", readme("09_evaluate"), re.M)
    assert len(rows) == 5, "lessons/09_evaluate/README.md: the precision-recall table"
    precision, recall = ap.precision_recall(tp, scores, 3)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    for i, (rank, name, yes, hits, prec, rec, env) in enumerate(rows):
        assert int(rank) == i + 1 and tp[i] == (yes == "yes")
        agrees(precision[i], prec, f"precision at rank {rank}")
        assert recall[i] == pytest.approx(int(rec) / 3)
        agrees(envelope[i], env, f"envelope at rank {rank}")
    ap50, = find("09_evaluate", r"= \\frac\{76\.4\}\{101\} = (" + NUMBER + ")")
    ap60, ap75, total = find("09_evaluate", r"AP drops to `\(34 \+ 33 \* 0\.4\) / 101 = (" + NUMBER + r")`.*?"
                                            r"`34 / 101 = (" + NUMBER + r")`.*?"
                                            r"3 \\cdot 0\)\s*= (" + NUMBER + ")")
    result = ap.ap_at_thresholds([ious], [scores])
    agrees(result[0], ap50, "AP50")
    agrees(result[1], ap50, "AP at 0.55 (nothing changes)")
    agrees(result[2], ap60, "AP from 0.6 on")
    agrees(result[5], ap75, "AP75")
    assert (result[7:] == 0).all(), "from 0.85 on nothing is right"
    agrees(result.mean(), total, "COCO's AP")
    np.testing.assert_allclose(result[[0, 2, 5]], [76.4 / 101, (34 + 33 * 0.4) / 101, 34 / 101])


def test_09_a_duplicate_ranked_first():
    ap75, = find("09_evaluate", r"AP75 halves to `34 \* 0\.5 / 101 = (" + NUMBER + r")`")
    ious, scores = lesson09_table()
    swapped = scores.copy()
    swapped[[0, 1]] = scores[[1, 0]]            # B above A
    result = ap.ap_at_thresholds([ious], [swapped], [0.5, 0.75])
    assert result[0] == pytest.approx(76.4 / 101), "the same AP50"
    agrees(result[1], ap75, "AP75 with B ranked above A")


def test_09_box_iou_against_mask_iou():
    box_value, mask_value = find("09_evaluate", r"keeps IoU `38 \* 40 / \(2 \* 1600 - 38 \* 40\) = (" + NUMBER +
                                                r")`, a mask 2 px too thin all around it scores `36\^2 / 40\^2 = (" +
                                                NUMBER + r")`")
    agrees(boxes.box_iou(np.array([[0.0, 0, 40, 40]]), np.array([[2.0, 0, 42, 40]]))[0, 0], box_value, "box IoU")
    square = np.zeros((2, 50, 50), dtype=bool)
    square[0, 5:45, 5:45] = True
    square[1, 7:43, 7:43] = True
    agrees(ap.mask_iou(square[:1], square[1:])[0, 0], mask_value, "mask IoU")


def test_09_cocos_floats():
    ninth, = find("09_evaluate", r"the ninth IoU threshold is (" + NUMBER + r")")
    level, = find("09_evaluate", r"the recall level \"0\.70\" is (" + NUMBER + r")")
    assert ap.IOU_THRESHOLDS[8] == float(ninth) == 0.8999999999999999
    assert ap.RECALL_THRESHOLDS[70] == float(level) == 0.7000000000000001
    # a recall of exactly 7/10 does not reach that level, one a hair above it does
    assert ap.average_precision(np.array([1.0]), np.array([0.7])) == pytest.approx(70 / 101)


# ---------------------------------------------------------------------------------------------------------
# the answers of the lessons' questions: the numbers they quote from the library
# ---------------------------------------------------------------------------------------------------------

def test_01_answers():
    small, large = find("01_iou", r"gives `box_iou` `12 \* 12 / \(256 \+ 256 - 144\) = (" + NUMBER + r")`\. The same "
                                  r"shift of `\(0, 0, 256, 256\)` gives `252\^2 / \(2 \* 256\^2 - 252\^2\) = (" +
                                  NUMBER + r")`")
    agrees(boxes.box_iou(np.array([[0.0, 0, 16, 16]]), np.array([[4.0, 4, 20, 20]]))[0, 0], small, "16 px box moved 4")
    agrees(boxes.box_iou(np.array([[0.0, 0, 256, 256]]), np.array([[4.0, 4, 260, 260]]))[0, 0], large,
           "256 px box moved 4")
    dx16, dx256 = find("01_iou", r"the same 4 px is `dx = (" + NUMBER + r")` for the 16 px box and `(" + NUMBER + r")`")
    agrees(boxes.box_encode(np.array([[0.0, 0, 16, 16]]), np.array([[4.0, 4, 20, 20]]))[0, 0], dx16, "dx, 16 px")
    agrees(boxes.box_encode(np.array([[0.0, 0, 256, 256]]), np.array([[4.0, 4, 260, 260]]))[0, 0], dx256, "dx, 256 px")
    row, = find("01_iou", r"`box_encode` of the target `\(8, 0, 40, 64\)` against the anchor `\(0, 0, 32, 32\)` gives "
                          r"`(\([^)]*\))`\. The target `\(128, 0, 640, 1024\)` against the anchor `\(0, 0, 512, 512\)` "
                          r"gives the same row")
    got = boxes.box_encode(np.array([[0.0, 0, 32, 32], [0, 0, 512, 512]]),
                           np.array([[8.0, 0, 40, 64], [128, 0, 640, 1024]]))
    for g, p in zip(got[0], row.strip("()").split(", ")):
        agrees(g, p, "box_encode of (8, 0, 40, 64) against (0, 0, 32, 32)")
    np.testing.assert_allclose(got[1], got[0])
    clamp, decoded = find("01_iou", r"The clamp `log\(1000/16\) = (" + NUMBER + r")` .*? "
                                    r"`box_decode\(\[\[0, 0, 10, 10\]\], \[\[0, 0, 16, 16\]\]\)` gives `(\([^)]*\))`")
    agrees(boxes.BBOX_XFORM_CLIP, clamp, "log(1000/16)")
    np.testing.assert_allclose(boxes.box_decode(np.array([[0.0, 0, 10, 10]]), np.array([[0.0, 0, 16, 16]]))[0],
                               tuple_of(decoded))


def test_02_answers():
    best, = find("02_anchors", r"For `a = 40` and `s = 128` that is `1600 / 16384 = (" + NUMBER + r")`")
    agrees(boxes.box_iou(np.array([[-20.0, -20, 20, 20]]), np.array([[-64.0, -64, 64, 64]]))[0, 0], best,
           "a centred 40 px object against a 128 px anchor")
    shrink, = find("02_anchors", r"its target `dw = dh = log\(40 / 128\) = (" + NUMBER + r")`")
    agrees(boxes.box_encode(np.array([[-64.0, -64, 64, 64]]), np.array([[-20.0, -20, 20, 20]]))[0, 2], shrink,
           "dw of a 40 px object against a 128 px anchor")
    iou48, iou64 = find("02_anchors", r"a 48 px object has IoU (" + NUMBER + r") with the 56 px anchor, and a 64 px "
                                      r"object (" + NUMBER + r") with the 72 px one")
    agrees(boxes.box_iou(np.array([[-24.0, -24, 24, 24]]), np.array([[-28.0, -28, 28, 28]]))[0, 0], iou48, "48 vs 56")
    agrees(boxes.box_iou(np.array([[-32.0, -32, 32, 32]]), np.array([[-36.0, -36, 36, 36]]))[0, 0], iou64, "64 vs 72")


def test_04_answers():
    aligns, pools = find("04_roi", r"The top-left output of `roi_align\(ramp, rois, 2, sampling_ratio=2\)` reads "
                                   r"((?:" + NUMBER + r",? (?:and )?){4})following .*? That of `roi_pool\(ramp, rois, "
                                   r"2\)` reads ((?:" + NUMBER + r",? (?:and )?){4})")
    ramp = (10.0 * np.arange(8)[:, None] + np.arange(8)[None, :])[None, None]
    rois = np.array([[0.0, 1 + d, 1, 5 + d, 3] for d in (0.25, 0.5, 0.75, 1.0)])
    np.testing.assert_allclose(roi_align(ramp, rois, 2, sampling_ratio=2)[:, 0, 0, 0], numbers(aligns))
    np.testing.assert_allclose(roi_pool(ramp, rois, 2)[0][:, 0, 0, 0], numbers(pools))
    iou, = find("04_roi", r"`box_iou\(\[\[0, 0, 64, 64\]\], \[\[8, 0, 72, 64\]\]\) = "
                          r"56 \* 64 / \(2 \* 4096 - 56 \* 64\) = (" + NUMBER + r")`")
    agrees(boxes.box_iou(np.array([[0.0, 0, 64, 64]]), np.array([[8.0, 0, 72, 64]]))[0, 0], iou, "a proposal 8 px off")


def test_05_answers():
    soft, down, up, sig, sig_grad = find(
        "05_losses", r"`softmax_mask_loss` costs (" + NUMBER + r") and pushes channel 1 down by (" + NUMBER +
                     r") and channel 2 up by (" + NUMBER + r")\. .*?`sigmoid_mask_loss` costs (" + NUMBER +
                     r"), with gradient (" + NUMBER + r") on channel 2 and none on channel 1")
    logits = np.array([0.0, 4.0, 4.0]).reshape(1, 3, 1, 1)
    loss, grad = losses.softmax_mask_loss(logits, np.array([2]), np.ones((1, 1, 1)))
    agrees(loss, soft, "softmax_mask_loss of the logits (0, 4, 4)")
    agrees(grad[0, 1, 0, 0], down, "its gradient on channel 1 (descent pushes it down)")
    agrees(-grad[0, 2, 0, 0], up, "minus its gradient on channel 2 (descent pushes it up)")
    loss, grad = losses.sigmoid_mask_loss(logits, np.array([2]), np.ones((1, 1, 1)))
    agrees(loss, sig, "sigmoid_mask_loss of the logits (0, 4, 4)")
    agrees(grad[0, 2, 0, 0], sig_grad, "its gradient on channel 2")
    assert grad[0, 1, 0, 0] == 0
    l2, l2_grad, l1, l1_grad = find("05_losses", r"L2 \(`0\.5 x\^2`\) charges (\d+) and sends back a gradient of "
                                                 r"(\d+)\. `smooth_l1_loss` with `β = 1` charges (" + NUMBER +
                                                 r"), with gradient (\d+)")
    loss, grad = losses.smooth_l1_loss(np.array([10.0]), np.zeros(1), beta=1.0, reduction="sum")
    assert (float(loss), float(grad[0])) == (float(l1), float(l1_grad)) == (9.5, 1.0)
    assert (0.5 * 10 ** 2, 10.0) == (float(l2), float(l2_grad))


def test_06_answers():
    back, counts = find("06_layers", r"`col2im\(im2col\(x\)\)` is `([^`]*)`: `x` times the counts `([^`]*)`")
    got = col2im(im2col(X3, (2, 2), (1, 1), (0, 0)), (1, 1, 3, 3), (2, 2), (1, 1), (0, 0))[0, 0]
    np.testing.assert_array_equal(got, np.array(numbers(back)).reshape(3, 3))
    np.testing.assert_array_equal(got, X3[0, 0] * np.array(numbers(counts)).reshape(3, 3))


def test_08_answers():
    keep, = find("08_train", r"`nms` of the two surviving boxes keeps only `(\[[^\]]*\])`")
    kept = boxes.nms(np.array([[10.0, 10, 50, 50], [14.0, 10, 54, 50]]), np.array([0.7, 0.1]), 0.5)
    assert kept.tolist() == numbers(keep) == [0]


def test_09_answers():
    ious, scores = lesson09_table()
    everything = ap.ap_at_thresholds([ious], [scores], [0.5])[0]
    for name, row in (("E", 4), ("D", 3), ("B", 1)):
        pattern = {"E": r"Remove E, .*? AP50 falls from (" + NUMBER + r") to (" + NUMBER + r")",
                   "D": r"Remove D and AP50 rises to (" + NUMBER + r")",
                   "B": r"Without B, AP50 rises from (" + NUMBER + r") to (" + NUMBER + r")"}[name]
        printed = find("09_evaluate", pattern)
        keep = np.arange(5) != row
        agrees(ap.ap_at_thresholds([ious[keep]], [scores[keep]], [0.5])[0], printed[-1], f"AP50 without {name}")
        if len(printed) == 2:
            agrees(everything, printed[0], "AP50 of the worked example")
    sixes, = find("09_evaluate", r"`ap_at_thresholds\(\[\[\[0\.6\]\]\], \[\[0\.9\]\]\)` is `([^`]*)`")
    np.testing.assert_array_equal(ap.ap_at_thresholds([np.array([[0.6]])], [np.array([0.9])]), numbers(sixes))
    assert ap.ap_at_thresholds([np.array([[0.9]])], [np.array([0.9])]).mean() == pytest.approx(0.9)
