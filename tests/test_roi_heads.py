"""Stages 3 and 7, the second stage's training targets: the box head's RoI mini-batch, the Fast R-CNN loss
and the mask targets (mrcnn_edu/roi_heads.py)."""
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.gradcheck import check_gradients
from mrcnn_edu.roi_heads import box_head_targets, fast_rcnn_loss, mask_targets


def host(a):
    return backend.to_host(a)


def arr(xp, values, dtype=np.float64):
    return xp.asarray(np.asarray(values, dtype=dtype))


def gen_rng(seed=0):
    return backend.rng(seed)


GT = [[0.0, 0.0, 10.0, 10.0]]


def strip(height):
    """A box sharing the gt's top-left corner and width: its IoU with GT is height / 10."""
    return [0.0, 0.0, 10.0, height]


# --------------------------------------------------------------------------------------------- box targets

def test_box_head_targets_hand_case(xp):
    proposals = arr(xp, [strip(7.5), strip(3.0), strip(5.0), [40, 40, 50, 50]])   # IoU .75, .3, .5, 0
    rois, labels, targets, matched = box_head_targets(proposals, arr(xp, GT), arr(xp, [2], np.int64), gen_rng(0))
    # everything fits in the batch: proposals in order, then the appended gt box
    np.testing.assert_array_equal(host(rois), np.array([strip(7.5), strip(3.0), strip(5.0), [40, 40, 50, 50]] + GT))
    np.testing.assert_array_equal(host(labels), [2, 0, 2, 0, 2], err_msg="IoU >= 0.5 is foreground")
    np.testing.assert_array_equal(host(matched), [0, 0, 0, 0, 0])
    assert labels.dtype == xp.int64 and matched.dtype == xp.int64
    # strip(7.5): centre (5, 3.75), 10 x 7.5 -> gt centre (5, 5), 10 x 10, weights (10, 10, 5, 5)
    np.testing.assert_allclose(host(targets)[0], [0.0, 10 * 1.25 / 7.5, 0.0, 5 * math.log(10 / 7.5)], atol=1e-12)
    np.testing.assert_allclose(host(targets)[4], [0.0, 0.0, 0.0, 0.0], atol=1e-12, err_msg="gt against itself")


def test_box_head_targets_ignored_band(xp):
    proposals = arr(xp, [strip(7.5), strip(3.0), strip(0.5)])   # IoU .75, .3 (ignored), .05
    rois, labels, _, _ = box_head_targets(proposals, arr(xp, GT), arr(xp, [1], np.int64), gen_rng(0),
                                          fg_iou=0.5, bg_iou=0.1)
    np.testing.assert_array_equal(host(rois), np.array([strip(7.5), strip(0.5)] + GT))
    np.testing.assert_array_equal(host(labels), [1, 0, 1])


def test_box_head_targets_two_classes(xp):
    gt = arr(xp, [[0, 0, 10, 10], [50, 50, 70, 70]])
    proposals = arr(xp, [[51, 50, 71, 70], [0, 1, 10, 11], [20, 20, 30, 30]])
    rois, labels, targets, matched = box_head_targets(proposals, gt, arr(xp, [1, 3], np.int64), gen_rng(0))
    np.testing.assert_array_equal(host(labels), [3, 1, 0, 1, 3])
    np.testing.assert_array_equal(host(matched), [1, 0, 0, 0, 1])
    # (51, 50, 71, 70) -> (50, 50, 70, 70): dx = 10 * (-1) / 20
    np.testing.assert_allclose(host(targets)[0], [-0.5, 0.0, 0.0, 0.0], atol=1e-12)


def test_box_head_targets_sampling_counts(xp):
    gen = np.random.default_rng(0)
    gt = np.array([[20.0, 20.0, 60.0, 60.0]])
    near = gt + gen.uniform(-2, 2, size=(40, 4))              # IoU well above 0.5: foreground
    xy = gen.uniform(100, 200, size=(60, 2))
    far = np.concatenate([xy, xy + 20], axis=1)               # no overlap: background
    proposals = np.concatenate([near, far])
    rois, labels, targets, matched = box_head_targets(xp.asarray(proposals), xp.asarray(gt),
                                                      xp.asarray(np.array([4])), gen_rng(1),
                                                      batch_size_per_image=32, positive_fraction=0.25)
    labels = host(labels)
    assert (labels == 4).sum() == 8 and (labels == 0).sum() == 24
    assert rois.shape == (32, 4) and targets.shape == (32, 4) and matched.shape == (32,)
    # sampled RoIs stay in proposal order (torchvision's torch.where over a mask)
    rows = [int(np.flatnonzero((np.vstack([proposals, gt]) == r).all(axis=1))[0]) for r in host(rois)]
    assert rows == sorted(rows) and len(set(rows)) == 32
    # a different seed draws a different mini-batch with the same counts
    rois2, labels2, _, _ = box_head_targets(xp.asarray(proposals), xp.asarray(gt), xp.asarray(np.array([4])),
                                            gen_rng(2), batch_size_per_image=32, positive_fraction=0.25)
    assert (host(labels2) == 4).sum() == 8 and not np.array_equal(host(rois2), host(rois))


def test_box_head_targets_without_gt(xp):
    proposals = arr(xp, [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 3, 3], [2, 2, 9, 9], [0, 0, 4, 4]], np.float32)
    rois, labels, targets, matched = box_head_targets(proposals, arr(xp, np.zeros((0, 4)), np.float32),
                                                      arr(xp, [], np.int64), gen_rng(0), batch_size_per_image=4)
    assert rois.shape == (4, 4) and rois.dtype == xp.float32
    np.testing.assert_array_equal(host(labels), [0, 0, 0, 0])
    np.testing.assert_array_equal(host(matched), [0, 0, 0, 0])
    np.testing.assert_array_equal(host(targets), np.zeros((4, 4)))


def test_box_head_targets_without_proposals(xp):
    gt = arr(xp, [[0, 0, 10, 10], [50, 50, 70, 70]])
    rois, labels, targets, matched = box_head_targets(arr(xp, np.zeros((0, 4))), gt, arr(xp, [2, 1], np.int64),
                                                      gen_rng(0))
    np.testing.assert_array_equal(host(rois), host(gt))
    np.testing.assert_array_equal(host(labels), [2, 1])
    np.testing.assert_array_equal(host(matched), [0, 1])
    np.testing.assert_allclose(host(targets), np.zeros((2, 4)), atol=1e-12)


# --------------------------------------------------------------------------------------------- loss

def test_fast_rcnn_loss_hand_value(xp):
    logits = arr(xp, np.zeros((2, 3)))                          # softmax over 3 classes: -log(1/3) each
    box_regression = np.full((2, 12), 7.0)                      # other classes' deltas must not count
    box_regression[0, 8:12] = [0.1, 0.0, 0.0, 0.05]             # RoI 0 is of class 2
    targets = arr(xp, np.zeros((2, 4)))
    loss_cls, loss_box, dlogits, dbox = fast_rcnn_loss(logits, xp.asarray(box_regression),
                                                       arr(xp, [2, 0], np.int64), targets)
    assert float(loss_cls) == pytest.approx(math.log(3.0), rel=1e-12)
    assert float(loss_box) == pytest.approx((0.045 + 0.01125) / 2, rel=1e-12)
    np.testing.assert_allclose(host(dlogits), [[1 / 6, 1 / 6, -1 / 3], [-1 / 3, 1 / 6, 1 / 6]], atol=1e-12)
    expected = np.zeros((2, 12))
    expected[0, 8:12] = [0.45, 0.0, 0.0, 0.225]
    np.testing.assert_allclose(host(dbox), expected, atol=1e-12)


def test_fast_rcnn_loss_gradients(xp):
    gen = np.random.default_rng(8)
    num_rois, num_classes = 6, 3
    labels = np.array([0, 2, 1, 0, 2, 1])
    logits = gen.standard_normal((num_rois, num_classes))
    targets = gen.standard_normal((num_rois, 4))
    box = gen.standard_normal((num_rois, num_classes, 4))
    # the own class's differences kept away from the smooth-L1 kink at 1/9 and from 0
    diff = gen.choice([-1.0, 1.0], size=(num_rois, 4)) * np.where(gen.random((num_rois, 4)) < 0.5,
                                                                   gen.uniform(0.02, 0.08, (num_rois, 4)),
                                                                   gen.uniform(0.2, 1.0, (num_rois, 4)))
    box[np.arange(num_rois), labels] = targets + diff
    logits, box = xp.asarray(logits), xp.asarray(box.reshape(num_rois, 4 * num_classes))
    labels, targets = xp.asarray(labels), xp.asarray(targets)

    def forward(logits, box):
        loss_cls, loss_box, _, _ = fast_rcnn_loss(logits, box, labels, targets)
        return xp.stack([loss_cls, loss_box])

    def backward(dout):
        _, _, dlogits, dbox = fast_rcnn_loss(logits, box, labels, targets)
        return dout[0] * dlogits, dout[1] * dbox

    check_gradients(forward, backward, [logits, box], tol=1e-6)


def test_fast_rcnn_loss_all_background_and_empty(xp):
    loss_cls, loss_box, dlogits, dbox = fast_rcnn_loss(arr(xp, [[2.0, 0.0]]), arr(xp, np.ones((1, 8))),
                                                       arr(xp, [0], np.int64), arr(xp, np.zeros((1, 4))))
    assert float(loss_cls) == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-12)
    assert float(loss_box) == 0.0 and not host(dbox).any()
    loss_cls, loss_box, dlogits, dbox = fast_rcnn_loss(arr(xp, np.zeros((0, 3))), arr(xp, np.zeros((0, 12))),
                                                       arr(xp, [], np.int64), arr(xp, np.zeros((0, 4))))
    assert float(loss_cls) == 0.0 and float(loss_box) == 0.0
    assert dlogits.shape == (0, 3) and dbox.shape == (0, 12)


# --------------------------------------------------------------------------------------------- masks

def test_mask_targets_full_mask_is_ones(xp):
    masks = xp.asarray(np.ones((1, 32, 32), dtype=bool))
    got = mask_targets(masks, arr(xp, [[4, 4, 20, 28], [0, 0, 32, 32], [10.5, 3.2, 17.9, 30.1]], np.float32),
                       arr(xp, [0, 0, 0], np.int64), 7)
    assert got.shape == (3, 7, 7) and got.dtype == xp.float32
    np.testing.assert_allclose(host(got), 1.0, atol=1e-6)


def test_mask_targets_left_half(xp):
    mask = np.zeros((1, 32, 32), dtype=bool)
    mask[:, :, :16] = True
    got = host(mask_targets(xp.asarray(mask), arr(xp, [[0, 0, 32, 32], [8, 0, 24, 32]]), arr(xp, [0, 0], np.int64),
                            8))
    # 4 x 4 samples a bin; the sample at x = 15.5 averages pixel 15 (in) and 16 (out): 1/2, so the bin
    # that ends at the mask's edge is (1 + 1 + 1 + 0.5) / 4
    np.testing.assert_allclose(got[0], np.tile([1, 1, 1, 0.875, 0, 0, 0, 0], (8, 1)), atol=1e-12)
    # the box from x = 8 to 24 at m = 8: 2 x 4 samples a bin, the 4th bin holds x = 14.5 (in) and 15.5 (half)
    np.testing.assert_allclose(got[1], np.tile([1, 1, 1, 0.75, 0, 0, 0, 0], (8, 1)), atol=1e-12)


def test_mask_targets_in_blocks_of_rois_are_those_of_one_block(xp, monkeypatch):
    """Each RoI is aligned on its own copy of its mask, a block of RoIs at a time: blocks of 2 give the bits of
    one block, each RoI on the mask it matched (a block cut out of order would not)."""
    from mrcnn_edu import roi_heads
    rng = np.random.default_rng(4)
    masks = xp.asarray(rng.random((3, 20, 24)) > 0.5)
    corner = rng.uniform(0, 12, (7, 2))
    boxes = arr(xp, np.concatenate([corner, corner + rng.uniform(2, 10, (7, 2))], axis=1), np.float32)
    matched = arr(xp, [2, 0, 1, 1, 2, 0, 2], np.int64)
    whole = host(mask_targets(masks, boxes, matched, 6, aligned=True))
    monkeypatch.setattr(roi_heads, "_BLOCK_ELEMENTS", 2 * 20 * 24 + 5)       # 2 RoIs a block: 4 blocks
    np.testing.assert_array_equal(host(mask_targets(masks, boxes, matched, 6, aligned=True)), whole)
    for r, g in enumerate(host(matched)):                                    # RoI r alone on its own mask
        alone = mask_targets(masks[int(g)][None], boxes[r:r + 1], arr(xp, [0], np.int64), 6, aligned=True)
        np.testing.assert_array_equal(host(alone)[0], whole[r])


def test_mask_targets_aligned_put_the_edge_where_the_box_says(xp):
    """With aligned=True the mask's edge at x = 16 falls exactly between target columns 3 and 4 (no half
    pixel shift): the convention that paste_masks pastes back with."""
    mask = np.zeros((1, 32, 32), dtype=bool)
    mask[:, :, :16] = True
    got = host(mask_targets(xp.asarray(mask), arr(xp, [[0, 0, 32, 32], [8, 0, 24, 32]]), arr(xp, [0, 0], np.int64),
                            8, aligned=True))
    np.testing.assert_allclose(got[0], np.tile([1, 1, 1, 1, 0, 0, 0, 0], (8, 1)), atol=1e-12)
    np.testing.assert_allclose(got[1], np.tile([1, 1, 1, 1, 0, 0, 0, 0], (8, 1)), atol=1e-12)


def test_mask_targets_pick_the_matched_mask(xp):
    masks = np.zeros((2, 16, 16))
    masks[1] = 1.0
    got = host(mask_targets(xp.asarray(masks), arr(xp, [[2, 2, 10, 10], [2, 2, 10, 10]]), arr(xp, [1, 0], np.int64),
                            4))
    np.testing.assert_allclose(got[0], 1.0)
    np.testing.assert_allclose(got[1], 0.0)


def test_mask_targets_empty(xp):
    got = mask_targets(xp.asarray(np.ones((2, 8, 8), dtype=bool)), arr(xp, np.zeros((0, 4))), arr(xp, [], np.int64),
                       5)
    assert got.shape == (0, 5, 5)


# --------------------------------------------------------------------------------------------- bad input

def test_bad_inputs(xp):
    proposals = arr(xp, [strip(7.5), strip(3.0)])
    gt, labels = arr(xp, GT), arr(xp, [1], np.int64)
    with pytest.raises(ValueError, match="gt_labels"):
        box_head_targets(proposals, gt, arr(xp, [1, 2], np.int64), gen_rng(0))
    with pytest.raises(ValueError, match="gt_labels"):
        box_head_targets(proposals, gt, arr(xp, [0], np.int64), gen_rng(0))
    with pytest.raises(TypeError, match="gt_labels"):
        box_head_targets(proposals, gt, arr(xp, [1.0]), gen_rng(0))
    with pytest.raises(ValueError, match="proposals"):
        box_head_targets(arr(xp, [[0.0, 0.0, np.nan, 1.0]]), gt, labels, gen_rng(0))
    with pytest.raises(ValueError, match="gt_boxes"):
        box_head_targets(proposals, arr(xp, [[0.0, 0.0, 10.0]]), labels, gen_rng(0))
    with pytest.raises(TypeError, match="rng"):
        box_head_targets(proposals, gt, labels, None)
    with pytest.raises(ValueError, match="box_regression"):
        fast_rcnn_loss(arr(xp, np.zeros((2, 3))), arr(xp, np.zeros((2, 8))), arr(xp, [0, 1], np.int64),
                       arr(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="regression_targets"):
        fast_rcnn_loss(arr(xp, np.zeros((2, 3))), arr(xp, np.zeros((2, 12))), arr(xp, [0, 1], np.int64),
                       arr(xp, np.zeros((3, 4))))
    with pytest.raises(ValueError, match="labels"):
        fast_rcnn_loss(arr(xp, np.zeros((2, 3))), arr(xp, np.zeros((2, 12))), arr(xp, [0, 3], np.int64),
                       arr(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="gt_masks"):
        mask_targets(arr(xp, np.ones((8, 8))), proposals, arr(xp, [0, 0], np.int64), 4)
    with pytest.raises(ValueError, match="matched_gt_index"):
        mask_targets(arr(xp, np.ones((1, 8, 8))), proposals, arr(xp, [0, 1], np.int64), 4)
    with pytest.raises(ValueError, match="matched_gt_index"):
        mask_targets(arr(xp, np.ones((1, 8, 8))), proposals, arr(xp, [0], np.int64), 4)
    with pytest.raises(ValueError, match="^m:"):
        mask_targets(arr(xp, np.ones((1, 8, 8))), proposals, arr(xp, [0, 0], np.int64), 0)


# --------------------------------------------------------------------------------------------- structure

def test_box_head_targets_names_its_four_parts(xp):
    proposals = arr(xp, [strip(7.5), strip(3.0)])
    got = box_head_targets(proposals, arr(xp, GT), arr(xp, [2], np.int64), gen_rng(0))
    rois, labels, targets, matched = got
    assert got.rois is rois and got.labels is labels and got.regression_targets is targets
    assert got.matched_gt_index is matched


def test_one_set_of_box_head_weights():
    from mrcnn_edu import boxes, roi_heads
    assert roi_heads.BOX_HEAD_WEIGHTS is boxes.BOX_HEAD_WEIGHTS == (10.0, 10.0, 5.0, 5.0)
    assert boxes.RPN_BOX_WEIGHTS == (1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_fast_rcnn_loss_core_equals_the_public_function(xp, box_loss):
    from mrcnn_edu.roi_heads import _fast_rcnn_loss
    gen = np.random.default_rng(6)
    P, K = 7, 3
    logits, deltas = xp.asarray(gen.normal(size=(P, K))), xp.asarray(gen.normal(0, 0.5, (P, 4 * K)))
    labels, targets = xp.asarray([1, 2, 0, 1, 0, 2, 2]), xp.asarray(gen.normal(0, 0.3, (P, 4)))
    xy = gen.uniform(0, 50, (P, 2))
    proposals = xp.asarray(np.concatenate([xy, xy + gen.uniform(5, 20, (P, 2))], axis=1))
    want = fast_rcnn_loss(logits, deltas, labels, targets, box_loss, proposals)
    got = _fast_rcnn_loss(logits, deltas, labels, targets, box_loss, proposals)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(host(g), host(w))


def test_out_of_range_integers_name_the_argument_and_the_values(xp):
    proposals = arr(xp, [strip(7.5), strip(3.0)])
    with pytest.raises(ValueError, match=r"gt_labels: expected classes >= 1 \(0 is the background\), "
                                         r"got values in \[0, 0\]"):
        box_head_targets(proposals, arr(xp, GT), arr(xp, [0], np.int64), gen_rng(0))
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 2\], got values in \[0, 3\]"):
        fast_rcnn_loss(arr(xp, np.zeros((2, 3))), arr(xp, np.zeros((2, 12))), arr(xp, [0, 3], np.int64),
                       arr(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"matched_gt_index: expected indices in \[0, 1\), got values in \[0, 1\]"):
        mask_targets(arr(xp, np.ones((1, 8, 8))), proposals, arr(xp, [0, 1], np.int64), 4)
