"""Stage 3, the RPN: anchor matching and labels, the balanced mini-batch, regression targets, the RPN loss
and proposals (mrcnn_edu/rpn.py). Hand-built boxes whose IoU a reader can check on paper."""
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.gradcheck import check_gradients
from mrcnn_edu.rpn import (generate_proposals, generate_proposals_batch, label_anchors, match_anchors,
                           match_by_iou, rpn_loss, rpn_targets, sample_balanced)


def host(a):
    return backend.to_host(a)


def arr(xp, values, dtype=np.float64):
    return xp.asarray(np.asarray(values, dtype=dtype))


def gen_rng(seed=0):
    """A generator of the backend under test (the library draws its mini-batches with it)."""
    return backend.rng(seed)


# A 10 x 10 ground-truth box and anchors that share its top-left corner and width, so IoU = height / 10.
GT = [[0.0, 0.0, 10.0, 10.0]]


def strip(height):
    return [0.0, 0.0, 10.0, height]


# --------------------------------------------------------------------------------------------- matching

def test_match_anchors_object_ignored_not_object(xp):
    anchors = arr(xp, [strip(7.5), strip(5.0), strip(1.0)])   # IoU 0.75, 0.5, 0.1
    got = host(match_anchors(arr(xp, GT), anchors))
    np.testing.assert_array_equal(got, [0, -2, -1], err_msg="IoU 0.75 -> gt 0, 0.5 -> -2, 0.1 -> -1")
    assert got.dtype == np.int64


def test_match_anchors_iou_exactly_high_is_object(xp):
    # torchvision (and we) use IoU >= 0.7 where the lecture says > 0.7; 0.3 exactly is "ignored", not below
    anchors = arr(xp, [strip(7.0), strip(3.0), strip(2.0), strip(8.0)])
    got = host(match_anchors(arr(xp, GT), anchors, allow_low_quality=False))
    np.testing.assert_array_equal(got, [0, -2, -1, 0])


def test_best_anchor_of_a_gt_is_object_even_below_high(xp):
    anchors = arr(xp, [strip(4.0), strip(2.0), [50.0, 50.0, 60.0, 60.0]])   # IoU 0.4, 0.2, 0
    np.testing.assert_array_equal(host(match_anchors(arr(xp, GT), anchors)), [0, -1, -1])
    np.testing.assert_array_equal(host(match_anchors(arr(xp, GT), anchors, allow_low_quality=False)), [-2, -1, -1])


def test_low_quality_rule_keeps_ties_and_own_argmax(xp):
    # anchor 0 is the best anchor of gt 0 (IoU 0.4) but overlaps gt 1 more (0.6): it gets back its OWN
    # best match, gt 1. Anchors 1 and 2 tie as gt 1's best (0.65, below high): both are matched.
    iou = np.array([[0.4, 0.1, 0.0, 0.2],
                    [0.6, 0.65, 0.65, 0.0]])
    np.testing.assert_array_equal(host(match_by_iou(arr(xp, iou), 0.7, 0.3)), [1, 1, 1, -1])
    np.testing.assert_array_equal(host(match_by_iou(arr(xp, iou), 0.7, 0.3, allow_low_quality=False)),
                                  [-2, -2, -2, -1])


def test_low_quality_ties_with_boxes(xp):
    # two anchors tie as the gt's best (IoU 0.4 each): both become objects
    anchors = arr(xp, [strip(4.0), [0.0, 6.0, 10.0, 10.0], strip(2.0)])
    np.testing.assert_array_equal(host(match_anchors(arr(xp, GT), anchors)), [0, 0, -1])


def test_ties_of_a_gt_best_iou_all_match(xp):
    iou = np.array([[0.4, 0.4, 0.1, 0.35]])
    np.testing.assert_array_equal(host(match_by_iou(arr(xp, iou))), [0, 0, -1, -2])


def test_match_without_gt_or_anchors(xp):
    anchors = arr(xp, [strip(5.0), strip(2.0)])
    np.testing.assert_array_equal(host(match_anchors(arr(xp, np.zeros((0, 4))), anchors)), [-1, -1])
    assert host(match_anchors(arr(xp, GT), arr(xp, np.zeros((0, 4))))).shape == (0,)


# --------------------------------------------------------------------------------------------- labels

def test_label_anchors(xp):
    anchors = arr(xp, [strip(7.5), strip(5.0), strip(1.0), [40.0, 40.0, 50.0, 50.0]], np.float32)
    labels, matches = label_anchors(anchors, arr(xp, GT, np.float32))
    np.testing.assert_array_equal(host(labels), [1, -1, 0, 0])
    np.testing.assert_array_equal(host(matches), [0, -2, -1, -1])
    assert labels.dtype == xp.float32


def test_label_anchors_without_gt_all_not_object(xp):
    anchors = arr(xp, [strip(7.5), strip(5.0), strip(1.0)])
    labels, matches = label_anchors(anchors, arr(xp, np.zeros((0, 4))))
    np.testing.assert_array_equal(host(labels), [0, 0, 0])
    np.testing.assert_array_equal(host(matches), [-1, -1, -1])


# --------------------------------------------------------------------------------------------- sampler

@pytest.mark.parametrize("n_pos, n_neg, batch, fraction, want_pos, want_neg", [
    (3, 100, 16, 0.5, 3, 13),    # few positives: negatives fill the batch
    (20, 100, 16, 0.5, 8, 8),    # plenty of both
    (20, 2, 16, 0.5, 8, 2),      # few negatives: the batch stays short
    (0, 5, 16, 0.5, 0, 5),
    (7, 9, 10, 0.25, 2, 8),      # int(10 * 0.25) = 2
    (4, 4, 0, 0.5, 0, 0),
])
def test_sample_balanced_counts(xp, n_pos, n_neg, batch, fraction, want_pos, want_neg):
    labels_host = np.concatenate([np.ones(n_pos), np.zeros(n_neg), -np.ones(6)])
    labels_host = labels_host[np.random.default_rng(3).permutation(labels_host.size)]
    pos, neg = sample_balanced(xp.asarray(labels_host), gen_rng(1), batch, fraction)
    pos, neg = host(pos), host(neg)
    assert (pos.sum(), neg.sum()) == (want_pos, want_neg)
    assert np.all(labels_host[pos] == 1) and np.all(labels_host[neg] == 0)
    assert not np.any(pos & neg)


def test_sample_balanced_class_labels_count_as_positive(xp):
    labels = arr(xp, [3, 1, 0, 0, -1, 2], np.int64)
    pos, neg = sample_balanced(labels, gen_rng(0), 4, 0.25)
    assert int(host(pos).sum()) == 1 and int(host(neg).sum()) == 2
    assert set(np.flatnonzero(host(pos))) <= {0, 1, 5}


def test_sample_balanced_is_uniform(xp):
    # choose 2 of 4 positives, many times: each is picked about half of the time, in different subsets
    labels = arr(xp, [1, 1, 1, 1, 0, 0])
    gen = gen_rng(7)
    picks = np.array([host(sample_balanced(labels, gen, 4, 0.5)[0])[:4] for _ in range(600)])
    assert np.all(picks.sum(axis=1) == 2)
    np.testing.assert_allclose(picks.mean(axis=0), 0.5, atol=0.08)
    assert len({tuple(p) for p in picks}) == 6


# --------------------------------------------------------------------------------------------- targets

def test_rpn_targets_labels_and_encoding(xp):
    # anchor 0 (10x10 at the origin) against gt (1, 2, 11, 12): centre moves by (1, 2), same size
    # (IoU 72 / 128 = 0.5625, an object only as the gt's best anchor)
    gt = arr(xp, [[1.0, 2.0, 11.0, 12.0]])
    anchors = arr(xp, [[0, 0, 10, 10], [1, 2, 11, 7], [100, 100, 110, 110], [90, 90, 100, 100]])
    labels, targets = rpn_targets(anchors, gt, gen_rng(0))
    np.testing.assert_array_equal(host(labels), [1, -1, 0, 0])
    np.testing.assert_allclose(host(targets)[0], [0.1, 0.2, 0.0, 0.0], atol=1e-12)
    # anchor 1 (10x5, centre (6, 4.5), IoU 0.5: ignored) is encoded against the same gt: (0, 0.5, 0, log 2)
    np.testing.assert_allclose(host(targets)[1], [0.0, 0.5, 0.0, math.log(2.0)], atol=1e-12)
    assert targets.shape == (4, 4) and targets.dtype == xp.float64


def test_rpn_targets_unsampled_anchors_are_ignored(xp):
    gen = np.random.default_rng(5)
    xy = gen.uniform(0, 300, size=(400, 2))
    anchors = np.concatenate([xy, xy + 32.0], axis=1)
    gt = np.array([[10.0, 10.0, 42.0, 42.0], [200.0, 100.0, 232.0, 132.0]])
    pre, _ = label_anchors(xp.asarray(anchors), xp.asarray(gt))
    labels, _ = rpn_targets(xp.asarray(anchors), xp.asarray(gt), gen_rng(0), batch_size_per_image=32,
                            positive_fraction=0.5)
    pre, labels = host(pre), host(labels)
    n_pos = int((pre == 1).sum())
    assert 0 < n_pos < 16
    assert (labels == 1).sum() == n_pos and (labels == 0).sum() == 32 - n_pos
    sampled = labels >= 0
    np.testing.assert_array_equal(labels[sampled], pre[sampled], err_msg="sampled labels keep their value")
    assert (labels == -1).sum() == 400 - 32


def test_rpn_targets_without_gt(xp):
    anchors = arr(xp, [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 3, 3]], np.float32)
    labels, targets = rpn_targets(anchors, arr(xp, np.zeros((0, 4)), np.float32), gen_rng(0),
                                  batch_size_per_image=2)
    assert int((host(labels) == 0).sum()) == 2 and int((host(labels) == -1).sum()) == 1
    np.testing.assert_array_equal(host(targets), np.zeros((3, 4)))
    assert labels.dtype == xp.float32 and targets.dtype == xp.float32


def test_rpn_targets_empty_anchors(xp):
    labels, targets = rpn_targets(arr(xp, np.zeros((0, 4))), arr(xp, GT), gen_rng(0))
    assert labels.shape == (0,) and targets.shape == (0, 4)


# --------------------------------------------------------------------------------------------- loss

def test_rpn_loss_hand_value(xp):
    objectness = arr(xp, [0.0, 0.0, 3.0])
    labels = arr(xp, [1.0, 0.0, -1.0])
    deltas = arr(xp, [[0.1, 0.0, 0.0, 0.05], [9.0, 9.0, 9.0, 9.0], [5.0, 5.0, 5.0, 5.0]])
    targets = arr(xp, np.zeros((3, 4)))
    loss_obj, loss_box, dobj, ddeltas = rpn_loss(objectness, deltas, labels, targets)
    assert float(loss_obj) == pytest.approx(math.log(2.0), rel=1e-12)
    # smooth-L1, beta 1/9, quadratic part 0.5 x^2 / beta: (0.045 + 0.01125) summed, over 2 sampled anchors
    assert float(loss_box) == pytest.approx((0.045 + 0.01125) / 2, rel=1e-12)
    np.testing.assert_allclose(host(dobj), [-0.25, 0.25, 0.0], atol=1e-12)
    np.testing.assert_allclose(host(ddeltas)[0], [0.9 / 2, 0.0, 0.0, 0.45 / 2], atol=1e-12)
    np.testing.assert_array_equal(host(ddeltas)[1:], 0.0, err_msg="no box gradient for negatives or unsampled")


def _loss_case(gen, shape):
    labels = gen.choice([-1.0, 0.0, 1.0], size=shape)
    labels.flat[:3] = [1.0, 0.0, -1.0]
    objectness = gen.standard_normal(shape)
    targets = gen.standard_normal(shape + (4,))
    # differences from the targets kept away from the smooth-L1 kink at 1/9 and from 0
    diff = gen.choice([-1.0, 1.0], size=shape + (4,)) * np.where(gen.random(shape + (4,)) < 0.5,
                                                                  gen.uniform(0.02, 0.08, shape + (4,)),
                                                                  gen.uniform(0.2, 1.0, shape + (4,)))
    return objectness, targets + diff, labels, targets


@pytest.mark.parametrize("shape", [(7,), (2, 5)])
def test_rpn_loss_gradients(xp, shape):
    objectness, deltas, labels, targets = (xp.asarray(a) for a in _loss_case(np.random.default_rng(2), shape))

    def forward(objectness, deltas):
        loss_obj, loss_box, _, _ = rpn_loss(objectness, deltas, labels, targets)
        return xp.stack([loss_obj, loss_box])

    def backward(dout):
        _, _, dobj, ddeltas = rpn_loss(objectness, deltas, labels, targets)
        return dout[0] * dobj, dout[1] * ddeltas

    check_gradients(forward, backward, [objectness, deltas], tol=1e-6)


def test_rpn_loss_no_sampled_anchor_is_zero(xp):
    loss_obj, loss_box, dobj, ddeltas = rpn_loss(arr(xp, [1.0, 2.0]), arr(xp, np.ones((2, 4))),
                                                 arr(xp, [-1.0, -1.0]), arr(xp, np.zeros((2, 4))))
    assert float(loss_obj) == 0.0 and float(loss_box) == 0.0
    assert not host(dobj).any() and not host(ddeltas).any()


def test_rpn_loss_float32(xp):
    objectness, deltas, labels, targets = (xp.asarray(a.astype(np.float32))
                                           for a in _loss_case(np.random.default_rng(4), (9,)))
    loss_obj, loss_box, dobj, ddeltas = rpn_loss(objectness, deltas, labels, targets)
    assert loss_obj.dtype == xp.float32 and loss_box.dtype == xp.float32
    assert dobj.dtype == xp.float32 and ddeltas.dtype == xp.float32


# --------------------------------------------------------------------------------------------- proposals

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_proposals_zero_deltas_are_clipped_anchors_sorted(xp):
    anchors = np.array([[0, 0, 10, 10], [30, 30, 50, 50], [-5, 40, 15, 70], [32, 31, 52, 51]], dtype=np.float64)
    logits = np.array([0.5, 2.0, 1.0, 1.5])
    boxes, scores = generate_proposals(xp.asarray(anchors), xp.asarray(logits), xp.asarray(np.zeros((4, 4))),
                                       (60, 48))
    # all clipped to the 48 x 60 image first; then anchor 3 overlaps anchor 1 (IoU 304 / 376 = 0.81 > 0.7)
    # with a lower score: suppressed
    np.testing.assert_allclose(host(boxes), [[30, 30, 48, 50], [0, 40, 15, 60], [0, 0, 10, 10]], atol=1e-12)
    np.testing.assert_allclose(host(scores), sigmoid([2.0, 1.0, 0.5]), rtol=1e-12)


def test_proposals_random_are_sorted_inside_and_suppressed(xp):
    gen = np.random.default_rng(11)
    xy = gen.uniform(-20, 100, size=(300, 2))
    wh = gen.uniform(8, 40, size=(300, 2))
    anchors = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    deltas = (0.2 * gen.standard_normal((300, 4))).astype(np.float32)
    logits = gen.permutation(np.linspace(-4, 4, 300)).astype(np.float32)
    boxes, scores = generate_proposals(xp.asarray(anchors), xp.asarray(logits), xp.asarray(deltas), (90, 120),
                                       pre_nms_top_n=200, post_nms_top_n=40, nms_thresh=0.5)
    boxes, scores = host(boxes), host(scores)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert 0 < len(boxes) <= 40
    assert np.all(np.diff(scores) < 0), "sorted by decreasing score"
    assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= 120)
    assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= 90)
    # every kept pair overlaps at most nms_thresh
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0]); x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1]); y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou = inter / (area[:, None] + area[None, :] - inter)
    assert np.all(iou[np.triu_indices(len(boxes), 1)] <= 0.5 + 1e-6)
    # only the 200 best logits were candidates
    assert scores.min() >= sigmoid(np.sort(logits)[-200]) - 1e-6


def test_proposals_remove_small_and_low_scores(xp):
    anchors = arr(xp, [[0, 0, 10, 10], [20, 20, 30, 30], [50, 0, 60, 10], [0, 40, 10, 50]])
    logits = arr(xp, [1.0, -1.0, 3.0, 0.2])
    # anchor 2 lies right of the 40-wide image: clipped to zero width, removed
    boxes, scores = generate_proposals(anchors, logits, arr(xp, np.zeros((4, 4))), (60, 40), score_thresh=0.5)
    np.testing.assert_allclose(host(boxes), [[0, 0, 10, 10], [0, 40, 10, 50]])
    np.testing.assert_allclose(host(scores), sigmoid([1.0, 0.2]), rtol=1e-12)


def test_proposals_decode_deltas(xp):
    # dx = 0.1, dy = -0.2 of a 20 x 10 anchor, dw = log 2: centre (20 + 2, 15 - 2), width 40
    anchors = arr(xp, [[10, 10, 30, 20]])
    deltas = arr(xp, [[0.1, -0.2, math.log(2.0), 0.0]])
    boxes, _ = generate_proposals(anchors, arr(xp, [0.0]), deltas, (100, 100))
    np.testing.assert_allclose(host(boxes), [[2, 8, 42, 18]], atol=1e-12)


def test_proposals_top_n(xp):
    xs = np.arange(10, dtype=np.float64) * 20
    anchors = np.stack([xs, xs * 0, xs + 10, xs * 0 + 10], axis=1)
    logits = np.arange(10, dtype=np.float64)
    boxes, scores = generate_proposals(xp.asarray(anchors), xp.asarray(logits), xp.asarray(np.zeros((10, 4))),
                                       (20, 400), pre_nms_top_n=5, post_nms_top_n=3)
    np.testing.assert_allclose(host(scores), sigmoid([9, 8, 7]), rtol=1e-12)
    np.testing.assert_allclose(host(boxes)[:, 0], [180, 160, 140])


def test_proposals_empty(xp):
    boxes, scores = generate_proposals(arr(xp, np.zeros((0, 4))), arr(xp, np.zeros(0)), arr(xp, np.zeros((0, 4))),
                                       (32, 32))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_proposals_batch_matches_single(xp):
    gen = np.random.default_rng(3)
    xy = gen.uniform(0, 60, size=(50, 2))
    anchors = xp.asarray(np.concatenate([xy, xy + 16], axis=1))
    logits = xp.asarray(gen.standard_normal((2, 50)))
    deltas = xp.asarray(0.1 * gen.standard_normal((2, 50, 4)))
    out = generate_proposals_batch(anchors, logits, deltas, [(64, 64), (40, 50)], post_nms_top_n=10)
    assert len(out) == 2
    for i, size in enumerate([(64, 64), (40, 50)]):
        boxes, scores = generate_proposals(anchors, logits[i], deltas[i], size, post_nms_top_n=10)
        np.testing.assert_array_equal(host(out[i][0]), host(boxes))
        np.testing.assert_array_equal(host(out[i][1]), host(scores))


# --------------------------------------------------------------------------------------------- bad input

def test_bad_inputs(xp):
    anchors = arr(xp, [strip(5.0), strip(2.0)])
    with pytest.raises(ValueError, match="gt_boxes"):
        match_anchors(arr(xp, np.zeros((1, 5))), anchors)
    with pytest.raises(ValueError, match="anchors"):
        match_anchors(arr(xp, GT), arr(xp, [[0.0, 0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="gt_boxes"):
        label_anchors(anchors, arr(xp, [[5.0, 0.0, 1.0, 1.0]]))   # x2 < x1
    with pytest.raises(ValueError, match="low"):
        match_anchors(arr(xp, GT), anchors, high=0.3, low=0.7)
    with pytest.raises(TypeError, match="rng"):
        rpn_targets(anchors, arr(xp, GT), 42)
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_balanced(arr(xp, [1.0, 0.0]), gen_rng(0), 2, 1.5)
    with pytest.raises(ValueError, match="batch_size"):
        sample_balanced(arr(xp, [1.0, 0.0]), gen_rng(0), -1, 0.5)
    with pytest.raises(ValueError, match="labels"):
        rpn_loss(arr(xp, [0.0, 0.0]), arr(xp, np.zeros((2, 4))), arr(xp, [1.0]), arr(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="labels"):
        rpn_loss(arr(xp, [0.0, 0.0]), arr(xp, np.zeros((2, 4))), arr(xp, [1.0, 2.0]), arr(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="deltas"):
        rpn_loss(arr(xp, [0.0, 0.0]), arr(xp, np.zeros((2, 3))), arr(xp, [1.0, 0.0]), arr(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="objectness"):
        rpn_loss(arr(xp, [np.inf, 0.0]), arr(xp, np.zeros((2, 4))), arr(xp, [1.0, 0.0]), arr(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="objectness"):
        generate_proposals(anchors, arr(xp, [0.0, 1.0, 2.0]), arr(xp, np.zeros((2, 4))), (10, 10))
    with pytest.raises(ValueError, match="deltas"):
        generate_proposals(anchors, arr(xp, [0.0, 1.0]), arr(xp, np.zeros((2, 5))), (10, 10))
    with pytest.raises(ValueError, match="image_size"):
        generate_proposals(anchors, arr(xp, [0.0, 1.0]), arr(xp, np.zeros((2, 4))), (10, 0))
    with pytest.raises(ValueError, match="image_sizes"):
        generate_proposals_batch(anchors, arr(xp, np.zeros((2, 2))), arr(xp, np.zeros((2, 2, 4))), [(10, 10)])


# --------------------------------------------------------------------------------------------- structure

def test_the_matcher_and_sampler_live_in_matching_and_rpn_re_exports_them():
    from mrcnn_edu import matching, roi_heads, rpn
    for name in ("match_by_iou", "sample_balanced", "BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "BOX_BETA"):
        assert getattr(rpn, name) is getattr(matching, name), name
    assert roi_heads._match_by_iou is rpn._match_by_iou is matching._match_by_iou


def test_rpn_targets_checks_each_array_once(xp, monkeypatch):
    """The public function checks anchors and gt boxes; the cores below it (IoU, matcher, encoding) do not."""
    from mrcnn_edu import _validate, boxes, rpn
    calls = []

    def counting(a, name="boxes", xp=None):
        calls.append(name)
        return _validate.check_boxes(a, name, xp)

    for module in (rpn, boxes):
        monkeypatch.setattr(module, "check_boxes", counting)
    anchors = arr(xp, [strip(7.5), strip(5.0), strip(1.0)])
    labels, targets = rpn_targets(anchors, arr(xp, GT), gen_rng(0))
    assert sorted(calls) == ["anchors", "gt_boxes"]
    np.testing.assert_array_equal(host(labels), [1, -1, 0])


def test_the_cores_give_what_the_public_functions_give(xp):
    from mrcnn_edu import rpn
    gen = np.random.default_rng(8)
    xy = gen.uniform(0, 60, size=(50, 2))
    anchors = xp.asarray(np.concatenate([xy, xy + 16], axis=1))
    gt = arr(xp, [[5.0, 5.0, 25.0, 30.0], [30.0, 40.0, 60.0, 70.0]])
    for seed in (0, 1):
        want, got = rpn_targets(anchors, gt, gen_rng(seed)), rpn._rpn_targets(anchors, gt, gen_rng(seed))
        for w, g in zip(want, got):
            np.testing.assert_array_equal(host(g), host(w))
    logits = xp.asarray(gen.standard_normal((2, 50)))
    deltas = xp.asarray(0.1 * gen.standard_normal((2, 50, 4)))
    boxes = rpn._generate_proposals_batch(anchors, logits, deltas, (64, 64), 40, 10, 0.7, 1e-3)
    assert len(boxes) == 2
    for i in range(2):
        want, _ = generate_proposals(anchors, logits[i], deltas[i], (64, 64), 40, 10, 0.7, 1e-3)
        np.testing.assert_array_equal(host(boxes[i]), host(want))


def test_rpn_targets_refuses_boxes_it_cannot_encode(xp):
    with pytest.raises(ValueError, match="anchors: every box needs a positive width"):
        rpn_targets(arr(xp, [[0.0, 0.0, 0.0, 10.0]]), arr(xp, GT), gen_rng(0))
    with pytest.raises(ValueError, match="gt_boxes: every box needs a positive width"):
        rpn_targets(arr(xp, [strip(5.0)]), arr(xp, [[0.0, 0.0, 10.0, 0.0]]), gen_rng(0))
