"""Oracle: mrcnn_edu.rpn and mrcnn_edu.roi_heads against torchvision (Matcher, BalancedPositiveNegativeSampler,
RegionProposalNetwork.assign_targets_to_anchors / compute_loss / filter_proposals, RoIHeads.select_training_samples,
fastrcnn_loss, project_masks_on_boxes). Skipped where torch or torchvision is missing.

The random draws of the samplers differ (torch.randperm against our random keys): where sampling is
involved the tests compare counts, and that the labels agree outside the sampling, or make the batch big
enough that every candidate is drawn."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection import _utils as det_utils  # noqa: E402
from torchvision.models.detection.roi_heads import (RoIHeads, fastrcnn_loss,  # noqa: E402
                                                    project_masks_on_boxes)
from torchvision.models.detection.rpn import RegionProposalNetwork  # noqa: E402

from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.roi_heads import box_head_targets, fast_rcnn_loss, mask_targets  # noqa: E402
from mrcnn_edu.rpn import (generate_proposals, label_anchors, match_anchors, match_by_iou, rpn_loss,  # noqa: E402
                           rpn_targets, sample_balanced)


def host(a):
    return backend.to_host(a)


def grid_anchors(height, width, stride, sizes, ratios):
    """Anchors as torchvision's AnchorGenerator lays them out (host float64), for test inputs only."""
    ratios = np.asarray(ratios, dtype=np.float64)
    h_ratios = np.sqrt(ratios)
    ws = (np.asarray(sizes)[None, :] / h_ratios[:, None]).reshape(-1)
    hs = (np.asarray(sizes)[None, :] * h_ratios[:, None]).reshape(-1)
    base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
    ys, xs = np.meshgrid(np.arange(0, height, stride), np.arange(0, width, stride), indexing="ij")
    shifts = np.stack([xs.ravel(), ys.ravel(), xs.ravel(), ys.ravel()], axis=1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def random_boxes(gen, n, height, width, min_side=8, max_side=60):
    xy = gen.uniform(0, [width - min_side, height - min_side], size=(n, 2))
    wh = gen.uniform(min_side, max_side, size=(n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=1)


def make_rpn(batch_size_per_image=256, positive_fraction=0.5, pre_nms_top_n=2000, post_nms_top_n=2000,
             nms_thresh=0.7, score_thresh=0.0):
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, batch_size_per_image, positive_fraction,
                                dict(training=pre_nms_top_n, testing=pre_nms_top_n),
                                dict(training=post_nms_top_n, testing=post_nms_top_n), nms_thresh,
                                score_thresh=score_thresh)
    return rpn.eval()


# --------------------------------------------------------------------------------------------- matching

@pytest.mark.parametrize("allow_low_quality", [True, False])
def test_matcher_on_iou_with_ties(xp, allow_low_quality):
    gen = np.random.default_rng(0)
    # IoU values on a 0.05 grid: many exact ties, and values equal to both thresholds
    iou = np.round(gen.uniform(0, 0.9, size=(6, 300)) / 0.05) * 0.05
    iou[:, :3] = [0.3, 0.7, 0.69]
    for dtype in (np.float32, np.float64):
        theirs = det_utils.Matcher(0.7, 0.3, allow_low_quality)(torch.from_numpy(iou.astype(dtype))).numpy()
        mine = host(match_by_iou(xp.asarray(iou.astype(dtype)), 0.7, 0.3, allow_low_quality))
        np.testing.assert_array_equal(mine, theirs)


def test_match_anchors_and_labels_on_boxes(xp):
    gen = np.random.default_rng(1)
    anchors = grid_anchors(96, 128, 16, (16, 32, 64), (0.5, 1.0, 2.0))
    gt = random_boxes(gen, 5, 96, 128)
    for dtype in (np.float32, np.float64):
        a, g = anchors.astype(dtype), gt.astype(dtype)
        iou = torchvision.ops.box_iou(torch.from_numpy(g), torch.from_numpy(a))
        theirs = det_utils.Matcher(0.7, 0.3, True)(iou).numpy()
        np.testing.assert_array_equal(host(match_anchors(xp.asarray(g), xp.asarray(a))), theirs)
        labels, _ = make_rpn().assign_targets_to_anchors([torch.from_numpy(a)], [{"boxes": torch.from_numpy(g)}])
        mine, _ = label_anchors(xp.asarray(a), xp.asarray(g))
        np.testing.assert_array_equal(host(mine), labels[0].numpy())


def test_rpn_targets_against_assign_targets(xp):
    gen = np.random.default_rng(2)
    anchors = grid_anchors(128, 160, 16, (24, 48), (0.5, 1.0, 2.0)).astype(np.float32)
    gt = random_boxes(gen, 4, 128, 160, min_side=16).astype(np.float32)
    rpn = make_rpn()
    labels, matched_boxes = rpn.assign_targets_to_anchors([torch.from_numpy(anchors)],
                                                          [{"boxes": torch.from_numpy(gt)}])
    their_targets = rpn.box_coder.encode_single(matched_boxes[0], torch.from_numpy(anchors)).numpy()
    their_labels = labels[0].numpy()
    mine, targets = rpn_targets(xp.asarray(anchors), xp.asarray(gt), backend.rng(0))
    mine, targets = host(mine), host(targets)
    np.testing.assert_allclose(targets, their_targets, rtol=1e-5, atol=1e-5)
    sampled = mine >= 0
    np.testing.assert_array_equal(mine[sampled], their_labels[sampled], err_msg="labels agree where sampled")
    pos, neg = rpn.fg_bg_sampler([torch.from_numpy(their_labels)])
    assert (mine == 1).sum() == int(pos[0].sum()) and (mine == 0).sum() == int(neg[0].sum())


def test_rpn_targets_without_gt_against_torchvision(xp):
    anchors = grid_anchors(64, 64, 16, (32,), (1.0,)).astype(np.float32)
    labels, _ = make_rpn().assign_targets_to_anchors([torch.from_numpy(anchors)], [{"boxes": torch.zeros((0, 4))}])
    mine, _ = label_anchors(xp.asarray(anchors), xp.asarray(np.zeros((0, 4), np.float32)))
    np.testing.assert_array_equal(host(mine), labels[0].numpy())


@pytest.mark.parametrize("n_pos, n_neg, batch, fraction", [(3, 500, 256, 0.5), (300, 500, 256, 0.5),
                                                           (300, 40, 256, 0.5), (50, 900, 512, 0.25),
                                                           (0, 10, 256, 0.5)])
def test_sampler_counts(xp, n_pos, n_neg, batch, fraction):
    gen = np.random.default_rng(n_pos + n_neg)
    labels = gen.permutation(np.concatenate([gen.integers(1, 4, n_pos), np.zeros(n_neg), -np.ones(30)]))
    labels = labels.astype(np.int64)
    pos_t, neg_t = det_utils.BalancedPositiveNegativeSampler(batch, fraction)([torch.from_numpy(labels)])
    pos, neg = sample_balanced(xp.asarray(labels), backend.rng(3), batch, fraction)
    pos, neg = host(pos), host(neg)
    assert (pos.sum(), neg.sum()) == (int(pos_t[0].sum()), int(neg_t[0].sum()))
    assert np.all(labels[pos] >= 1) and np.all(labels[neg] == 0)


# --------------------------------------------------------------------------------------------- RPN loss

def test_rpn_loss_against_compute_loss(xp):
    gen = np.random.default_rng(4)
    num = 60
    labels = gen.choice([-1.0, 0.0, 1.0], size=num)
    objectness = gen.standard_normal(num)
    deltas = gen.standard_normal((num, 4))
    targets = gen.standard_normal((num, 4))
    # a sampler that draws every labelled anchor: the same mini-batch on both sides
    rpn = make_rpn(batch_size_per_image=num, positive_fraction=1.0)
    obj_t = torch.tensor(objectness, requires_grad=True)
    deltas_t = torch.tensor(deltas, requires_grad=True)
    loss_obj_t, loss_box_t = rpn.compute_loss(obj_t, deltas_t, [torch.from_numpy(labels)],
                                              [torch.from_numpy(targets)])
    (loss_obj_t + 2.0 * loss_box_t).backward()
    loss_obj, loss_box, dobj, ddeltas = rpn_loss(xp.asarray(objectness), xp.asarray(deltas), xp.asarray(labels),
                                                 xp.asarray(targets))
    np.testing.assert_allclose(float(loss_obj), loss_obj_t.item(), rtol=1e-12)
    np.testing.assert_allclose(float(loss_box), loss_box_t.item(), rtol=1e-12)
    np.testing.assert_allclose(host(dobj), obj_t.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(2.0 * host(ddeltas), deltas_t.grad.numpy(), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------------------------- proposals

@pytest.mark.parametrize("pre, post, nms_thresh, score_thresh, min_size", [
    (2000, 2000, 0.7, 0.0, 1e-3),
    (150, 30, 0.5, 0.0, 1e-3),
    (400, 400, 1.0, 0.0, 0.0),      # no suppression: decoding and clipping of every top-k box
    (300, 100, 0.7, 0.55, 4.0),
])
def test_generate_proposals_against_filter_proposals(xp, pre, post, nms_thresh, score_thresh, min_size):
    gen = np.random.default_rng(5)
    height, width = 100, 130
    anchors = grid_anchors(height, width, 16, (16, 32, 64), (0.5, 1.0, 2.0)).astype(np.float32)
    num = anchors.shape[0]
    objectness = (gen.permutation(num) / num * 8 - 4).astype(np.float32)   # distinct scores
    deltas = (0.3 * gen.standard_normal((num, 4))).astype(np.float32)
    rpn = make_rpn(pre_nms_top_n=pre, post_nms_top_n=post, nms_thresh=nms_thresh, score_thresh=score_thresh)
    rpn.min_size = min_size
    decoded = rpn.box_coder.decode(torch.from_numpy(deltas), [torch.from_numpy(anchors)]).view(1, -1, 4)
    boxes_t, scores_t = rpn.filter_proposals(decoded, torch.from_numpy(objectness).view(1, -1), [(height, width)],
                                             [num])
    boxes, scores = generate_proposals(xp.asarray(anchors), xp.asarray(objectness), xp.asarray(deltas),
                                       (height, width), pre_nms_top_n=pre, post_nms_top_n=post,
                                       nms_thresh=nms_thresh, min_size=min_size, score_thresh=score_thresh)
    assert boxes.shape == tuple(boxes_t[0].shape)
    np.testing.assert_allclose(host(boxes), boxes_t[0].numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(host(scores), scores_t[0].numpy(), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------- box head

def make_roi_heads(batch_size_per_image, positive_fraction):
    return RoIHeads(None, None, None, 0.5, 0.5, batch_size_per_image, positive_fraction, None, 0.05, 0.5, 100)


def _box_head_case(seed):
    gen = np.random.default_rng(seed)
    gt = random_boxes(gen, 3, 120, 150, min_side=20)
    jitter = gen.uniform(-6, 6, size=(60, 4))
    near = np.repeat(gt, 20, axis=0) + jitter
    near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)
    proposals = np.concatenate([near, random_boxes(gen, 80, 120, 150)]).astype(np.float32)
    return proposals, gt.astype(np.float32), np.array([1, 3, 2], dtype=np.int64)


def test_box_head_targets_against_select_training_samples(xp):
    proposals, gt, gt_labels = _box_head_case(6)
    total = proposals.shape[0] + gt.shape[0]
    # a batch that holds every RoI and no cap on foreground: no randomness on either side
    heads = make_roi_heads(total, 1.0)
    rois_t, matched_t, labels_t, targets_t = heads.select_training_samples(
        [torch.from_numpy(proposals)], [{"boxes": torch.from_numpy(gt), "labels": torch.from_numpy(gt_labels)}])
    rois, labels, targets, matched = box_head_targets(xp.asarray(proposals), xp.asarray(gt), xp.asarray(gt_labels),
                                                      backend.rng(0), batch_size_per_image=total,
                                                      positive_fraction=1.0)
    np.testing.assert_array_equal(host(rois), rois_t[0].numpy())
    np.testing.assert_array_equal(host(labels), labels_t[0].numpy())
    np.testing.assert_array_equal(host(matched), matched_t[0].numpy())
    np.testing.assert_allclose(host(targets), targets_t[0].numpy(), rtol=1e-5, atol=1e-4)


def test_box_head_sample_counts_against_select_training_samples(xp):
    proposals, gt, gt_labels = _box_head_case(7)
    heads = make_roi_heads(64, 0.25)
    _, _, labels_t, _ = heads.select_training_samples(
        [torch.from_numpy(proposals)], [{"boxes": torch.from_numpy(gt), "labels": torch.from_numpy(gt_labels)}])
    _, labels, _, _ = box_head_targets(xp.asarray(proposals), xp.asarray(gt), xp.asarray(gt_labels), backend.rng(0),
                                       batch_size_per_image=64, positive_fraction=0.25)
    labels, labels_t = host(labels), labels_t[0].numpy()
    assert labels.shape == labels_t.shape
    assert (labels > 0).sum() == (labels_t > 0).sum() and (labels == 0).sum() == (labels_t == 0).sum()


def test_box_head_without_gt_against_torchvision(xp):
    proposals, _, _ = _box_head_case(8)
    heads = make_roi_heads(512, 0.25)
    rois_t, matched_t, labels_t, _ = heads.select_training_samples(
        [torch.from_numpy(proposals)], [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}])
    rois, labels, targets, matched = box_head_targets(xp.asarray(proposals), xp.asarray(np.zeros((0, 4), np.float32)),
                                                      xp.asarray(np.zeros(0, np.int64)), backend.rng(0))
    np.testing.assert_array_equal(host(rois), rois_t[0].numpy())   # every proposal fits: same order
    np.testing.assert_array_equal(host(labels), labels_t[0].numpy())
    np.testing.assert_array_equal(host(matched), matched_t[0].numpy())


def test_fast_rcnn_loss_against_torchvision(xp):
    gen = np.random.default_rng(9)
    num_rois, num_classes = 40, 5
    logits = gen.standard_normal((num_rois, num_classes))
    box = gen.standard_normal((num_rois, 4 * num_classes))
    labels = gen.integers(0, num_classes, num_rois)
    targets = gen.standard_normal((num_rois, 4))
    logits_t = torch.tensor(logits, requires_grad=True)
    box_t = torch.tensor(box, requires_grad=True)
    loss_cls_t, loss_box_t = fastrcnn_loss(logits_t, box_t, [torch.from_numpy(labels)], [torch.from_numpy(targets)])
    (loss_cls_t + 3.0 * loss_box_t).backward()
    loss_cls, loss_box, dlogits, dbox = fast_rcnn_loss(xp.asarray(logits), xp.asarray(box), xp.asarray(labels),
                                                       xp.asarray(targets))
    np.testing.assert_allclose(float(loss_cls), loss_cls_t.item(), rtol=1e-12)
    np.testing.assert_allclose(float(loss_box), loss_box_t.item(), rtol=1e-12)
    np.testing.assert_allclose(host(dlogits), logits_t.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(3.0 * host(dbox), box_t.grad.numpy(), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------------------------- mask targets

@pytest.mark.parametrize("m", [7, 14, 28])
def test_mask_targets_against_project_masks_on_boxes(xp, m):
    gen = np.random.default_rng(m)
    height, width = 45, 61
    masks = gen.random((3, height, width)) < 0.5
    masks[0, 10:30, 5:40] = True
    boxes = random_boxes(gen, 12, height, width, min_side=3, max_side=50).astype(np.float32)
    matched = gen.integers(0, 3, 12)
    theirs = project_masks_on_boxes(torch.from_numpy(masks), torch.from_numpy(boxes), torch.from_numpy(matched), m)
    mine = mask_targets(xp.asarray(masks), xp.asarray(boxes), xp.asarray(matched), m)
    assert mine.dtype == xp.float32
    np.testing.assert_allclose(host(mine), theirs.numpy(), rtol=1e-5, atol=1e-5)
