"""The GIoU box loss (the lecture's "could IoU be L_box?") and the decoding backward it trains through."""
import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.boxes import BBOX_XFORM_CLIP, box_decode, box_decode_backward
from mrcnn_edu.gradcheck import check_gradients
from mrcnn_edu.losses import giou_loss
from mrcnn_edu.roi_heads import fast_rcnn_loss


def random_boxes(gen, n, low=5.0, high=40.0):
    xy = gen.uniform(0, 50, (n, 2))
    return np.concatenate([xy, xy + gen.uniform(low, high, (n, 2))], axis=1)


def test_giou_by_hand(xp):
    # A = (0,0,2,2), B = (1,1,3,3): I = 1, U = 7, C = 9 -> GIoU = 1/7 - 2/9
    # disjoint A = (0,0,1,1), B = (2,0,3,1): I = 0, U = 2, C = 3 -> GIoU = -1/3
    pred = xp.asarray([[0.0, 0, 2, 2], [0, 0, 1, 1], [1, 1, 4, 5]])
    target = xp.asarray([[1.0, 1, 3, 3], [2, 0, 3, 1], [1, 1, 4, 5]])
    loss, _ = giou_loss(pred, target, reduction="none", eps=0.0)
    np.testing.assert_allclose(backend.to_host(loss), [1 - (1 / 7 - 2 / 9), 1 + 1 / 3, 0.0], atol=1e-12)


def test_giou_pulls_disjoint_boxes_together(xp):
    """Where 1 - IoU has no gradient at all, GIoU's moves the box towards its target."""
    pred, target = xp.asarray([[0.0, 0, 1, 1]]), xp.asarray([[2.0, 0, 3, 1]])
    loss, grad = giou_loss(pred, target, eps=0.0)
    # L = 1 + (C - U) / C = 2 - U / C with U = 2, C = 3: dL/dx2 = -1/C = -1/3 (the union grows, the hull
    # does not), dL/dx1 = 1/9 (both shrink): descent stretches the box's right side towards the target
    np.testing.assert_allclose(backend.to_host(grad)[0, [0, 2]], [1 / 9, -1 / 3], rtol=1e-12)
    # away from ties between corners (where min/max have no derivative) a small descent step lowers the loss
    target = xp.asarray([[2.0, 0.25, 3, 1.25]])
    loss, grad = giou_loss(pred, target)
    stepped, _ = giou_loss(pred - 0.01 * grad, target)
    assert float(stepped) < float(loss)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_giou_gradient(xp, reduction):
    gen = np.random.default_rng(0)
    target = random_boxes(gen, 8)
    pred = target + gen.normal(0, 4, (8, 4))                  # overlapping
    pred[:3] = random_boxes(gen, 3) + [60, 0, 60, 0]           # disjoint
    pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
    p, t = xp.asarray(pred), xp.asarray(target)
    check_gradients(lambda p: giou_loss(p, t, reduction)[0],
                    lambda dout: (dout * giou_loss(p, t, reduction)[1] if reduction != "none"
                                  else dout[:, None] * giou_loss(p, t, reduction)[1],), [p])


def test_giou_bad_input(xp):
    with pytest.raises(ValueError, match="target_boxes"):
        giou_loss(xp.zeros((2, 4)), xp.zeros((3, 4)))
    with pytest.raises(ValueError, match="pred_boxes"):
        giou_loss(xp.zeros((2, 5)), xp.zeros((2, 5)))
    loss, grad = giou_loss(xp.zeros((0, 4)), xp.zeros((0, 4)))
    assert float(loss) == 0.0 and grad.shape == (0, 4)


def test_box_decode_backward(xp):
    gen = np.random.default_rng(1)
    ref = xp.asarray(random_boxes(gen, 5))
    deltas = xp.asarray(gen.normal(0, 1, (5, 8)))
    weights = (10.0, 10.0, 5.0, 5.0)
    check_gradients(lambda d: box_decode(d, ref, weights),
                    lambda dout: (box_decode_backward(dout, deltas, ref, weights),), [deltas])


def test_box_decode_backward_is_zero_where_the_size_was_clipped(xp):
    ref = xp.asarray([[0.0, 0, 10, 10]])
    deltas = xp.asarray([[0.0, 0, 2 * BBOX_XFORM_CLIP, 0]])
    g = backend.to_host(box_decode_backward(xp.ones((1, 4)) * xp.asarray([-1.0, 0, 1, 0]), deltas, ref))
    assert g[0, 2] == 0 and g[0, 3] == 0


def test_fast_rcnn_giou_loss_trains_through_the_decoding(xp):
    gen = np.random.default_rng(2)
    P, K = 6, 3
    logits, boxes = xp.asarray(gen.normal(size=(P, K))), xp.asarray(gen.normal(0, 0.5, (P, 4 * K)))
    labels, targets = xp.asarray([1, 2, 0, 1, 0, 2]), xp.asarray(gen.normal(0, 0.3, (P, 4)))
    proposals = xp.asarray(random_boxes(gen, P))
    _, loss, _, grad = fast_rcnn_loss(logits, boxes, labels, targets, "giou", proposals)
    assert 0 < float(loss) < 2 * 4 / P
    g = backend.to_host(grad).reshape(P, K, 4)
    assert not g[[2, 4]].any() and not g[0, [0, 2]].any() and g[0, 1].any()   # own class of foreground only
    check_gradients(lambda b: fast_rcnn_loss(logits, b, labels, targets, "giou", proposals)[1],
                    lambda dout: (dout * fast_rcnn_loss(logits, boxes, labels, targets, "giou", proposals)[3],),
                    [boxes])
    with pytest.raises(ValueError, match="proposals"):
        fast_rcnn_loss(logits, boxes, labels, targets, "giou")
    with pytest.raises(ValueError, match="box_loss"):
        fast_rcnn_loss(logits, boxes, labels, targets, "iou", proposals)
