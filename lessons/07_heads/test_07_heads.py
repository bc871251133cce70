"""Lesson 07, graded: the box head's mini-batch and loss, the mask targets, pasting masks back (lecture stage 7).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.roi_heads`` and ``mrcnn_edu.heads``, gives the expected values. Each test belongs to the
task in its name.

``box_head_targets`` draws its mini-batch with the generator it is given, and nothing asks you to draw
your random numbers the way the library does. So its tests never compare a random draw with the library's:
they either make the draw irrelevant (a batch large enough to keep every labelled RoI, so the result is
deterministic and compared exactly), or, when the batch is subsampled, check what any correct draw must
satisfy: the counts, proposal order, every row equal to that RoI's row in the deterministic full table,
the same output for the same seed and a different selection for another seed.
"""
import math

import numpy as np
import pytest
from _grading import expect_close, expect_equal, expect_gradient, expect_true, show

from mrcnn_edu import heads as lib_heads
from mrcnn_edu import roi_heads as lib

TASKS = {1: "box_head_targets", 2: "fast_rcnn_loss", 3: "mask_targets", 4: "paste_masks"}

# The worked example of README.md: one object of class 2, three proposals.
GT_BOX = np.array([[0.0, 0.0, 10.0, 10.0]])
PROPOSALS = np.array([[0.0, 0.0, 10.0, 5.0],       # IoU 0.5 exactly: foreground (>= fg_iou)
                      [0.0, 0.0, 10.0, 4.0],       # IoU 0.4: background
                      [20.0, 20.0, 30.0, 30.0]])   # IoU 0: background


def random_image(seed, num_proposals=40, jitter=8.0):
    """3 ground-truth boxes in a 100 x 120 image, and proposals: jittered copies of them plus random boxes."""
    rng = np.random.default_rng(seed)
    gt = np.array([[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 110.0, 50.0], [30.0, 55.0, 70.0, 95.0]])
    labels = np.array([1, 3, 2])
    near = gt[rng.integers(0, 3, num_proposals // 2)] + rng.uniform(-jitter, jitter, (num_proposals // 2, 4))
    corner = rng.uniform(0, 90, (num_proposals - num_proposals // 2, 2))
    far = np.hstack([corner, corner + rng.uniform(5, 40, corner.shape)])
    proposals = np.vstack([near, far])
    proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 1.0)
    return proposals, gt, labels


def full_table(proposals, gt, labels, **kw):
    """The library's output with a batch so large that every labelled RoI is kept: deterministic."""
    return lib.box_head_targets(proposals, gt, labels, np.random.default_rng(0), batch_size_per_image=10 ** 6, **kw)


def rows_in(table_rois, rois):
    """Index of each row of ``rois`` in ``table_rois`` (-1 where none matches)."""
    diff = np.abs(np.asarray(rois, dtype=np.float64)[:, None] - table_rois[None]).max(axis=2)
    return np.where(diff.min(axis=1) < 1e-9, diff.argmin(axis=1), -1)


# ----------------------------------------------------------------------------------- task 1: box_head_targets

def test_task1_by_hand(impl):
    rois, labels, targets, matched = impl.box_head_targets(PROPOSALS, GT_BOX, np.array([2]),
                                                           np.random.default_rng(0))
    case = ("box_head_targets of one object (0, 0, 10, 10) of class 2 and the proposals (0, 0, 10, 5), "
            "(0, 0, 10, 4), (20, 20, 30, 30), batch 512 (every box kept)")
    expect_close(rois, np.vstack([PROPOSALS, GT_BOX]), case + ": rois, the proposals then the appended ground truth")
    expect_equal(np.asarray(labels), [2, 0, 0, 2], case + ": labels (IoU 0.5 is foreground, 0.4 and 0 background)")
    expect_equal(np.asarray(matched), [0, 0, 0, 0], case + ": matched_gt_index (0 for the background too)")
    expect_close(targets, [[0, 5, 0, 5 * math.log(2)], [0, 7.5, 0, 5 * math.log(2.5)], [-20, -20, 0, 0], [0, 0, 0, 0]],
                 case + ": regression_targets, box_encode with weights (10, 10, 5, 5), "
                        "e.g. dy = 10 (5 - 2.5) / 5 = 5 and dh = 5 log(10 / 5) for the first")


@pytest.mark.parametrize("fg_iou, bg_iou", [(0.5, 0.5), (0.5, 0.2), (0.6, 0.3)])
def test_task1_every_roi_kept(impl, fg_iou, bg_iou):
    proposals, gt, labels = random_image(1)
    got = impl.box_head_targets(proposals, gt, labels, np.random.default_rng(2), fg_iou=fg_iou, bg_iou=bg_iou)
    want = lib.box_head_targets(proposals, gt, labels, np.random.default_rng(2), fg_iou=fg_iou, bg_iou=bg_iou)
    case = (f"box_head_targets of 40 proposals and 3 objects, fg_iou={fg_iou}, bg_iou={bg_iou}, batch 512 "
            f"(so every foreground and background RoI is kept, the ignored ones dropped)")
    expect_close(got[0], want[0], case + ": rois, in proposal order")
    expect_equal(np.asarray(got[1]), want[1], case + ": labels")
    expect_close(got[2], want[2], case + ": regression_targets")
    expect_equal(np.asarray(got[3]), want[3], case + ": matched_gt_index")


@pytest.mark.parametrize("seed", [3, 4])
def test_task1_subsampled(impl, seed):
    proposals, gt, labels = random_image(5, num_proposals=80, jitter=5.0)
    table = full_table(proposals, gt, labels)
    rois, got_labels, targets, matched = (np.asarray(a) for a in impl.box_head_targets(
        proposals, gt, labels, np.random.default_rng(seed), batch_size_per_image=16, positive_fraction=0.25))
    case = f"box_head_targets of 80 proposals and 3 objects, batch 16, positive_fraction 0.25, rng seed {seed}"
    num_fg, num_bg = int((table[1] > 0).sum()), int((table[1] == 0).sum())
    want_fg = min(4, num_fg)
    expect_equal([int((got_labels > 0).sum()), int((got_labels == 0).sum())], [want_fg, min(16 - want_fg, num_bg)],
                 case + f": (foreground, background) counts, of {num_fg} foreground and {num_bg} background candidates")
    where = rows_in(table[0], rois)
    expect_true(bool(np.all(where >= 0)), case + ": every RoI is a proposal or a ground-truth box that is not "
                                                 "ignored", f"RoIs not found: {rois[where < 0]}")
    expect_true(bool(np.all(np.diff(where) > 0)), case + ": the RoIs keep proposal order (no shuffling)",
                f"their positions among the candidates: {where}")
    expect_equal(got_labels, table[1][where], case + ": each RoI's label, as in the full table")
    expect_close(targets, table[2][where], case + ": each RoI's regression target, as in the full table")
    expect_equal(matched, table[3][where], case + ": each RoI's matched_gt_index, as in the full table")


def test_task1_the_draw_uses_the_generator(impl):
    proposals, gt, labels = random_image(5, num_proposals=80, jitter=5.0)

    def draw(seed):
        rois, got_labels, _, _ = impl.box_head_targets(proposals, gt, labels, np.random.default_rng(seed),
                                                       batch_size_per_image=16)
        return np.asarray(rois), np.asarray(got_labels)

    case = "box_head_targets of 80 proposals (44 foreground, 39 background candidates), batch 16"
    expect_close(draw(7)[0], draw(7)[0], case + ", twice with rng seed 7: the same RoIs (all randomness from the rng)")
    (rois7, labels7), (rois8, labels8) = draw(7), draw(8)
    for name, keep7, keep8 in (("foreground", labels7 > 0, labels8 > 0), ("background", labels7 == 0, labels8 == 0)):
        one, two = rois7[keep7], rois8[keep8]
        expect_true(one.shape != two.shape or not np.array_equal(one, two),
                    f"{case}, rng seeds 7 and 8: different {name} RoIs (a random draw, not the first ones)",
                    f"both draws picked {show(one)}")


def test_task1_image_without_objects(impl):
    proposals = random_image(6, num_proposals=10)[0]
    empty_boxes, empty_labels = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    rois, labels, targets, matched = impl.box_head_targets(proposals, empty_boxes, empty_labels,
                                                           np.random.default_rng(9))
    case = "box_head_targets of 10 proposals in an image without objects, batch 512"
    expect_close(rois, proposals, case + ": every proposal is a background RoI, in order")
    expect_equal(np.asarray(labels), np.zeros(10, dtype=np.int64), case + ": labels")
    expect_close(targets, np.zeros((10, 4)), case + ": regression_targets (zeros: nothing to encode)")
    expect_equal(np.asarray(matched), np.zeros(10, dtype=np.int64), case + ": matched_gt_index")
    rois, labels, _, _ = impl.box_head_targets(proposals, empty_boxes, empty_labels, np.random.default_rng(9),
                                               batch_size_per_image=6)
    expect_equal([len(np.asarray(rois)), int((np.asarray(labels) == 0).sum())], [6, 6],
                 "box_head_targets of the same, batch 6: (RoIs, background RoIs)")


# ------------------------------------------------------------------------------------- task 2: fast_rcnn_loss

def test_task2_by_hand(impl):
    labels = np.array([2, 0])
    targets = np.array([[0.1, -0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    loss_cls, loss_box, dlogits, dbox = impl.fast_rcnn_loss(np.zeros((2, 3)), np.zeros((2, 12)), labels, targets)
    case = "fast_rcnn_loss of P = 2 RoIs (classes 2 and 0), K = 3, zero logits and deltas"
    expect_close(loss_cls, math.log(3), case + ": loss_cls, -log(1/3)")
    expect_close(dlogits, [[1 / 6, 1 / 6, 1 / 6 - 1 / 2], [1 / 6 - 1 / 2, 1 / 6, 1 / 6]],
                 case + ": dclass_logits, (softmax - onehot) / P")
    expect_close(loss_box, (0.5 * 0.1 ** 2 * 9 + 0.5 - 0.5 / 9) / 2,
                 case + ": loss_box, smooth-L1 (beta 1/9) of RoI 0's class-2 deltas against (0.1, -0.5, 0, 0), / P; "
                        "RoI 1 is background and costs nothing")
    want = np.zeros((2, 12))
    want[0, 8:12] = [-0.1 * 9 / 2, 1 / 2, 0, 0]
    expect_close(dbox, want, case + ": dbox_regression, only columns 8..11 (class 2) of RoI 0")


def random_head(seed, num_rois=8, num_classes=4):
    """Logits, deltas, labels (some background) and targets with |own deltas - targets| away from beta = 1/9."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (num_rois, num_classes))
    deltas = rng.normal(0, 0.5, (num_rois, 4 * num_classes))
    labels = rng.integers(0, num_classes, num_rois)
    labels[:2] = [0, 1]
    own = deltas.reshape(num_rois, num_classes, 4)[np.arange(num_rois), labels]
    err = np.where(rng.uniform(size=(num_rois, 4)) < 0.5, rng.uniform(0.01, 0.08, (num_rois, 4)),
                   rng.uniform(0.2, 1.0, (num_rois, 4))) * rng.choice([-1.0, 1.0], (num_rois, 4))
    return logits, deltas, labels, own - err


def test_task2_random(impl):
    logits, deltas, labels, targets = random_head(10)
    got = impl.fast_rcnn_loss(logits, deltas, labels, targets)
    want = lib.fast_rcnn_loss(logits, deltas, labels, targets)
    case = "fast_rcnn_loss of 8 random RoIs, K = 4 (some background)"
    for name, g, e in zip(("loss_cls", "loss_box", "dclass_logits", "dbox_regression"), got, want):
        expect_close(g, e, f"{case}: {name}")


def test_task2_matches_finite_differences(impl):
    logits, deltas, labels, targets = random_head(11, num_rois=5, num_classes=3)
    _, _, dlogits, dbox = impl.fast_rcnn_loss(logits, deltas, labels, targets)
    case = "fast_rcnn_loss gradients against finite differences of the losses, 5 RoIs, K = 3"
    expect_gradient(dlogits, lambda z: lib.fast_rcnn_loss(z, deltas, labels, targets)[0], logits,
                    case + ": dclass_logits of loss_cls")
    expect_gradient(dbox, lambda d: lib.fast_rcnn_loss(logits, d, labels, targets)[1], deltas,
                    case + ": dbox_regression of loss_box")


def test_task2_background_only_and_empty(impl):
    logits, deltas, _, targets = random_head(12)
    _, loss_box, _, dbox = impl.fast_rcnn_loss(logits, deltas, np.zeros(8, dtype=np.int64), targets)
    case = "fast_rcnn_loss of 8 background RoIs"
    expect_close(loss_box, 0.0, case + ": loss_box (no foreground, no box loss)")
    expect_close(dbox, np.zeros((8, 16)), case + ": dbox_regression")
    got = impl.fast_rcnn_loss(np.zeros((0, 4)), np.zeros((0, 16)), np.zeros(0, dtype=np.int64), np.zeros((0, 4)))
    case = "fast_rcnn_loss of P = 0 RoIs, K = 4"
    expect_close([float(got[0]), float(got[1])], [0.0, 0.0], case + ": (loss_cls, loss_box), zeros rather than NaN")
    expect_equal([np.asarray(got[2]).shape, np.asarray(got[3]).shape], [(0, 4), (0, 16)],
                 case + ": the shapes of (dclass_logits, dbox_regression)")


# --------------------------------------------------------------------------------------- task 3: mask_targets

def square_mask():
    """One 8 x 8 ground-truth mask, the 4 x 4 square of pixels 2..5 (the box (2, 2, 6, 6))."""
    mask = np.zeros((1, 8, 8), dtype=bool)
    mask[0, 2:6, 2:6] = True
    return mask


def test_task3_by_hand(impl):
    box = np.array([[2.0, 2.0, 6.0, 6.0]])
    got = impl.mask_targets(square_mask(), box, np.array([0]), 4, aligned=True)
    expect_close(got, np.ones((1, 4, 4)), "mask_targets of the 4 x 4 square (pixels 2..5) in its box (2, 2, 6, 6), "
                                          "m = 4, aligned=True: every sample at a pixel centre inside the square")
    got = impl.mask_targets(square_mask(), box, np.array([0]), 4)
    edge = [1, 1, 1, 0.5]
    expect_close(got, [np.outer(edge, edge)],
                 "mask_targets of the same, aligned=False (torchvision): the samples sit half a pixel down and "
                 "right, so the last row and column read half square, half background")


def random_masks(seed, num=3, size=(20, 24)):
    """``num`` masks of random discs and rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[0], :size[1]]
    masks = np.zeros((num,) + size, dtype=bool)
    for g in range(num):
        cy, cx, r = rng.uniform(4, size[0] - 4), rng.uniform(4, size[1] - 4), rng.uniform(3, 7)
        masks[g] = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        y0, x0 = rng.integers(0, size[0] - 5), rng.integers(0, size[1] - 5)
        masks[g, y0:y0 + 4, x0:x0 + 5] = True
    return masks


@pytest.mark.parametrize("aligned", [False, True])
def test_task3_random(impl, aligned):
    rng = np.random.default_rng(13)
    masks = random_masks(14)
    corner = rng.uniform(-2, 18, (6, 2))
    boxes = np.hstack([corner, corner + rng.uniform(2, 12, (6, 2))])
    matched = rng.integers(0, 3, 6)
    expect_close(impl.mask_targets(masks, boxes, matched, 7, aligned=aligned),
                 lib.mask_targets(masks, boxes, matched, 7, aligned=aligned),
                 f"mask_targets of 6 random boxes on 3 masks of 20 x 24, m = 7, aligned={aligned}")


def test_task3_no_rois(impl):
    got = impl.mask_targets(random_masks(15), np.zeros((0, 4)), np.zeros(0, dtype=np.int64), 5)
    expect_equal(np.asarray(got).shape, (0, 5, 5), "mask_targets of 0 RoIs, m = 5: the shape of the output")


# ---------------------------------------------------------------------------------------- task 4: paste_masks

def test_task4_by_hand(impl):
    mask = np.array([[[0.0, 1.0], [0.0, 1.0]]])
    got = impl.paste_masks(mask, np.array([[2.0, 2.0, 6.0, 6.0]]), (8, 8))
    # the mask padded with zeros: columns 0 0 1 0 at p = u + 1 = 0..3; rows 0 r r 0 likewise
    row = np.array([0, 0, 0, 0.25, 0.75, 0.75, 0.25, 0])
    rows = np.array([0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0])
    want = (rows[:, None] * row[None, :])[None]
    expect_close(got, want, "paste_masks of the 2 x 2 mask 0 1 / 0 1 into the box (2, 2, 6, 6) of an 8 x 8 image: "
                            "column x reads u = (x + 0.5 - 2) / 4 * 2 - 0.5 = x / 2 - 1.25 of the mask padded with "
                            "one zero pixel a side (index u + 1), bilinearly; rows likewise")


def test_task4_a_box_the_size_of_the_image_is_the_identity(impl):
    mask = np.random.default_rng(16).uniform(size=(1, 6, 6))
    expect_close(impl.paste_masks(mask, np.array([[0.0, 0.0, 6.0, 6.0]]), (6, 6)), mask,
                 "paste_masks of a random 6 x 6 mask into the box (0, 0, 6, 6) of a 6 x 6 image: "
                 "pixel centre x + 0.5 lands on mask pixel centre u = x, the mask comes back unchanged")


def test_task4_random(impl):
    rng = np.random.default_rng(17)
    masks = rng.uniform(size=(3, 5, 5))
    corner = rng.uniform(-3, 12, (3, 2))
    boxes = np.hstack([corner, corner + rng.uniform(3, 10, (3, 2))])
    expect_close(impl.paste_masks(masks, boxes, (12, 15)), lib_heads.paste_masks(masks, boxes, (12, 15)),
                 "paste_masks of 3 random 5 x 5 masks into random boxes (some partly outside) of a 12 x 15 image")


def test_task4_no_detections(impl):
    got = impl.paste_masks(np.zeros((0, 4, 4)), np.zeros((0, 4)), (5, 7))
    expect_equal(np.asarray(got).shape, (0, 5, 7), "paste_masks of 0 detections in a 5 x 7 image: the output's shape")
