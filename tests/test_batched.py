"""The model's batched cores (issue 16): each does for the whole batch at once what a per-image core does in a
loop over the images, and must give the same numbers to the last bit; the capstone puts the loop back in while
a student's per-image function (or one it calls) is in place, so the student's function is still called.
"""
import sys

import numpy as np
import pytest

from mrcnn_edu import capstone, roi, roi_heads, rpn
from mrcnn_edu.anchors import _generate_anchors
from mrcnn_edu.capstone import BATCHED, ENTRIES, plan, substituted

from test_capstone import SMALL, make_lessons


def proposal_case(rng, trial):
    """Random RPN outputs for a batch: ties of the scores (rounded logits), boxes too small (very negative
    dw, dh), few and many anchors kept before NMS."""
    n, size = int(rng.integers(1, 5)), int(rng.choice([64, 128]))
    anchors = _generate_anchors((size, size), 16.0, [24.0, 40.0, 56.0], [0.5, 1.0, 2.0], 0.5, "float32")
    objectness = rng.normal(size=(n, len(anchors))).astype(np.float32)
    if trial % 3 == 0:
        objectness = np.round(objectness, 1)
    deltas = (rng.normal(size=(n, len(anchors), 4)) * rng.choice([0.1, 1.0, 3.0])).astype(np.float32)
    if trial % 4 == 0:
        deltas[..., 2:] -= 8.0
    settings = (int(rng.choice([10, 50, 1000])), int(rng.choice([5, 32, 64])), float(rng.choice([0.3, 0.7])),
                float(rng.choice([1e-3, 4.0])))
    return anchors, objectness, deltas, (size, size), settings


def test_proposals_of_the_batch_equal_those_image_by_image():
    rng = np.random.default_rng(16)
    lengths = set()
    for trial in range(120):
        anchors, objectness, deltas, size, settings = proposal_case(rng, trial)
        batch = rpn._generate_proposals_batch(anchors, objectness, deltas, size, *settings)
        each = rpn._generate_proposals_each(anchors, objectness, deltas, size, *settings)
        assert len(batch) == len(each) == len(objectness)
        for mine, loop in zip(batch, each):
            assert mine.shape == loop.shape and mine.dtype == loop.dtype
            np.testing.assert_array_equal(mine, loop)
            lengths.add(len(loop))
    assert min(lengths) < 5 and max(lengths) == 64    # images that lose boxes to the size test, and full ones


def gt_case(rng, n, size=128):
    """Each image's ground-truth boxes: 0 to 5 of them (an image without any among them), some far outside
    every anchor, some the same box twice (ties of the matcher's best IoU)."""
    per_image = []
    for i in range(n):
        g = 0 if i == 1 else int(rng.integers(1, 6))
        xy = rng.uniform(-10, size, size=(g, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 70, size=(g, 2))], axis=1).astype(np.float32)
        if g > 2:
            boxes[2] = boxes[0]
        per_image.append(boxes)
    return per_image


def test_rpn_targets_of_the_batch_equal_those_image_by_image():
    rng = np.random.default_rng(3)
    for trial in range(40):
        size = int(rng.choice([64, 128]))
        anchors = _generate_anchors((size, size), 16.0, [24.0, 40.0], [0.5, 1.0, 2.0], 0.5, "float32")
        gt = gt_case(rng, int(rng.integers(2, 5)), size)
        settings = (int(rng.choice([16, 256])), float(rng.choice([0.25, 0.5])), 0.7, 0.3)
        seed = int(rng.integers(1 << 30))
        labels, targets = rpn._rpn_targets_batch(anchors, gt, np.random.default_rng(seed), *settings)
        labels_each, targets_each = rpn._rpn_targets_each(anchors, gt, np.random.default_rng(seed), *settings)
        np.testing.assert_array_equal(labels, labels_each)    # the sampler drew the same numbers
        np.testing.assert_array_equal(targets, targets_each)
        assert labels.shape == (len(gt), len(anchors)) and targets.dtype == np.float32
        assert (labels[1] == 1).sum() == 0 and (targets[1] == 0).all()     # the image without ground truth


def box_head_case(rng, n):
    """Each image's proposals (0 to 40, near its ground truth and far from it) and ground truth."""
    gt = gt_case(rng, n)
    proposals = []
    for g in gt:
        count = int(rng.integers(0, 41))
        centre = g[rng.integers(0, len(g), count)] if len(g) else rng.uniform(0, 100, size=(count, 4))
        jitter = rng.normal(scale=rng.choice([2.0, 20.0]), size=(count, 4))
        boxes = np.sort((centre + jitter).reshape(count, 2, 2), axis=1).reshape(count, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
        proposals.append(boxes.astype(np.float32))
    labels = [rng.integers(1, 4, len(g)).astype(np.int64) for g in gt]
    return proposals, gt, labels


def test_box_head_targets_of_the_batch_equal_those_image_by_image():
    rng = np.random.default_rng(7)
    for trial in range(60):
        proposals, gt, labels = box_head_case(rng, int(rng.integers(1, 5)))
        settings = (int(rng.choice([8, 64, 512])), float(rng.choice([0.25, 0.5])), 0.5, float(rng.choice([0.1, 0.5])))
        seed = int(rng.integers(1 << 30))
        batch, positives = roi_heads._box_head_targets_batch(proposals, gt, labels, np.random.default_rng(seed),
                                                             *settings)
        each, positives_each = roi_heads._box_head_targets_each(proposals, gt, labels, np.random.default_rng(seed),
                                                                *settings)
        assert len(batch) == len(each) == len(gt)
        assert positives == positives_each == [int((t.labels > 0).sum()) for t in each]
        for mine, loop in zip(batch, each):
            for a, b in zip(mine, loop):
                assert a.shape == b.shape and a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)


def test_mask_rois_of_the_batch_equal_those_image_by_image():
    from mrcnn_edu import matching
    rng = np.random.default_rng(5)
    for trial in range(30):
        positives = [rng.random(int(rng.integers(0, 40))) < rng.choice([0.1, 0.5]) for _ in range(4)]
        cap, seed = int(rng.choice([0, 3, 8])), int(rng.integers(1 << 30))
        counts = [int(p.sum()) for p in positives]
        batch = matching._sample_mask_rois_batch(positives, cap, np.random.default_rng(seed), counts)
        each = matching._sample_mask_rois_each(positives, cap, np.random.default_rng(seed), counts)
        for mine, loop, p in zip(batch, each, positives):
            np.testing.assert_array_equal(mine, loop)
            assert mine.sum() == (p.sum() if cap <= 0 else min(cap, p.sum())) and not (mine & ~p).any()


def _entry_of():
    """Code object -> ENTRIES function name, for every library object the capstone replaces."""
    codes = {}
    for entry in ENTRIES:
        for dotted, _ in entry.targets:
            codes[capstone._resolve(dotted).__code__] = entry.function
    return codes


def _called(fn, *args):
    """The ENTRIES functions ``fn(*args)`` calls, directly or deeper down."""
    codes, seen = _entry_of(), set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen.add(codes[frame.f_code])

    sys.setprofile(profile)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return seen


def batched_examples():
    anchors, objectness, deltas, size, settings = proposal_case(np.random.default_rng(0), 1)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 3, 8, 8))
    rois = np.array([[0, 1.0, 2.0, 30.0, 20.0], [1, 0.0, 0.0, 64.0, 64.0], [1, 8.0, 8.0, 9.0, 40.0]])
    plan = roi._align_plan(rois, features.shape, (4, 4), 1 / 8, 2, True, features.dtype)
    positives = [rng.random(12) < 0.8, rng.random(5) < 0.5]
    return {"mrcnn_edu.rpn._generate_proposals_batch": (anchors, objectness, deltas, size, *settings),
            "mrcnn_edu.rpn._rpn_targets_batch": (anchors, gt_case(rng, 3, size[0]), rng, 64, 0.5),
            "mrcnn_edu.roi_heads._box_head_targets_batch": (*box_head_case(rng, 3), rng, 16),
            "mrcnn_edu.matching._sample_mask_rois_batch": (positives, 3, rng, [int(p.sum()) for p in positives]),
            "mrcnn_edu.roi._roi_align_planned": (features, plan),
            "mrcnn_edu.roi._roi_align_backward_planned": (rng.normal(size=(len(rois), 3, 4, 4)), plan)}


@pytest.mark.parametrize("batched, each, made_of", BATCHED, ids=lambda v: v if isinstance(v, str) else "")
def test_each_loop_names_every_student_function_it_calls(batched, each, made_of):
    called = _called(capstone._resolve(each), *batched_examples()[batched])
    assert called and called <= set(made_of), f"{each} calls {sorted(called - set(made_of))} not in BATCHED"
    assert not _called(capstone._resolve(batched), *batched_examples()[batched]) & called - {
        "box_area", "box_iou", "box_decode", "box_encode", "match_by_iou", "sample_balanced"}


def test_a_student_function_inside_a_batched_core_puts_the_loop_back(tmp_path):
    """With only nms written, the model's proposals run image by image, and call it once an image."""
    rows, modules = plan(make_lessons(tmp_path), SMALL)
    mine = [r for r in rows if r.entry.function == "nms"]
    anchors, objectness, deltas, size, settings = proposal_case(np.random.default_rng(3), 1)
    from mrcnn_edu import model
    expected = rpn._generate_proposals_batch(anchors, objectness, deltas, size, *settings)
    with substituted(mine, modules) as sub:
        assert model._generate_proposals_batch is rpn._generate_proposals_each
        got = model._generate_proposals_batch(anchors, objectness, deltas, size, *settings)
    assert sub.stages["nms"].calls == len(objectness)
    assert model._generate_proposals_batch is rpn._generate_proposals_batch    # put back (rpn's never changed)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    with substituted([r for r in rows if r.entry.function == "rpn_loss"], modules):
        assert model._generate_proposals_batch is rpn._generate_proposals_batch   # not made of rpn_loss


def test_a_batch_without_any_object():
    """No image has ground truth: every anchor and every RoI is background, every delta 0, as the loop says."""
    anchors = _generate_anchors((64, 64), 16.0, [24.0, 40.0], [1.0], 0.5, "float32")
    empty = [np.zeros((0, 4), np.float32)] * 2
    labels, targets = rpn._rpn_targets_batch(anchors, empty, np.random.default_rng(0), 16, 0.5)
    labels_each, targets_each = rpn._rpn_targets_each(anchors, empty, np.random.default_rng(0), 16, 0.5)
    np.testing.assert_array_equal(labels, labels_each)
    np.testing.assert_array_equal(targets, targets_each)
    assert (labels == 0).sum() == 32 and (labels == 1).sum() == 0 and not targets.any()
    proposals = [anchors[:5], anchors[:0]]
    no_labels = [np.zeros(0, np.int64)] * 2
    batch, positives = roi_heads._box_head_targets_batch(proposals, empty, no_labels, np.random.default_rng(0), 4)
    each, _ = roi_heads._box_head_targets_each(proposals, empty, no_labels, np.random.default_rng(0), 4)
    assert positives == [0, 0]
    for mine, loop in zip(batch, each):
        for a, b in zip(mine, loop):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    assert [len(t.rois) for t in batch] == [4, 0]
