"""Stages 1 and 2 against torchvision: boxes.py and anchors.py on random inputs (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection._utils import BoxCoder  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.ops import boxes as tv_boxes  # noqa: E402

from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.anchors import generate_anchors  # noqa: E402
from mrcnn_edu.boxes import (batched_nms, box_area, box_decode, box_encode, box_iou,  # noqa: E402
                             clip_boxes_to_image, nms, remove_small_boxes)

pytestmark = pytest.mark.oracle

SEEDS = (0, 1, 2)
DTYPES = ("float32", "float64")
IMAGE = (480, 640)  # (height, width)


def host(a):
    return backend.to_host(a)


def tv(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def random_boxes(gen, n, dtype, max_size=200.0):
    """n boxes with positive sizes in a 640 x 480 image, a good part of them reaching outside it."""
    xy = gen.uniform(-60.0, 620.0, size=(n, 2))
    wh = gen.uniform(1.0, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def assert_close(mine, theirs, dtype, what):
    """Equal up to a few ulps of the largest value: NumPy's and torch's float32 exp / log differ in the last
    bit, and x1 = cx - w / 2 turns that into an absolute error of the size of the coordinates' ulp."""
    theirs = theirs.numpy()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(host(mine), theirs, rtol=8 * eps, atol=8 * eps * np.abs(theirs).max(),
                               err_msg=f"{what}: mine vs torchvision")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_and_area(xp, seed, dtype):
    gen = np.random.default_rng(seed)
    b1, b2 = random_boxes(gen, 60, dtype), random_boxes(gen, 45, dtype)
    mine = box_iou(xp.asarray(b1), xp.asarray(b2))
    assert mine.dtype == np.dtype(dtype)
    assert_close(mine, tv_boxes.box_iou(tv(b1), tv(b2)), dtype, "box_iou")
    assert_close(box_area(xp.asarray(b1)), tv_boxes.box_area(tv(b1)), dtype, "box_area")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_encode(xp, seed, dtype, weights):
    gen = np.random.default_rng(seed)
    reference, targets = random_boxes(gen, 200, dtype), random_boxes(gen, 200, dtype)
    mine = box_encode(xp.asarray(reference), xp.asarray(targets), weights)
    # torchvision calls the ground truth "reference_boxes" and the anchors "proposals"
    theirs = BoxCoder(weights).encode_single(tv(targets), tv(reference))
    assert_close(mine, theirs, dtype, "box_encode")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("k", [1, 3])
def test_box_decode(xp, seed, dtype, weights, k):
    gen = np.random.default_rng(seed)
    reference = random_boxes(gen, 200, dtype)
    deltas = gen.normal(scale=2.0, size=(200, 4 * k))
    deltas[::7, 2::4] = 30.0      # far past the clamp: torchvision and we both stop at log(1000/16)
    deltas[::11, 3::4] = -8.0     # no lower clamp
    deltas = (deltas * np.array(weights * k)).astype(dtype)
    mine = box_decode(xp.asarray(deltas), xp.asarray(reference), weights)
    theirs = BoxCoder(weights).decode_single(tv(deltas), tv(reference))
    assert mine.shape == (200, 4 * k)
    assert_close(mine, theirs, dtype, "box_decode")
    clip = 2.0
    mine = box_decode(xp.asarray(deltas), xp.asarray(reference), weights, clip=clip)
    theirs = BoxCoder(weights, bbox_xform_clip=clip).decode_single(tv(deltas), tv(reference))
    assert_close(mine, theirs, dtype, "box_decode(clip=2)")


def nms_inputs(gen, n, dtype, ties=False):
    """n boxes clustered around 40 centres, so that NMS has chains of overlaps to resolve."""
    centres = gen.uniform(0.0, 600.0, size=(40, 2))[gen.integers(0, 40, size=n)]
    centres += gen.normal(scale=15.0, size=(n, 2))
    half = gen.uniform(10.0, 80.0, size=(n, 2))
    boxes = np.concatenate([centres - half, centres + half], axis=1).astype(dtype)
    scores = gen.uniform(size=n)
    if ties:
        scores = scores.round(2)
    return boxes, scores.astype(dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_nms(xp, seed, dtype, ties):
    gen = np.random.default_rng(seed)
    boxes, scores = nms_inputs(gen, 2000, dtype, ties)
    for threshold in (0.0, 0.3, 0.5, 0.7, 0.9):
        mine = host(nms(xp.asarray(boxes), xp.asarray(scores), threshold))
        theirs = tv_boxes.nms(tv(boxes), tv(scores), threshold).numpy()
        assert mine.dtype == np.int64
        np.testing.assert_array_equal(mine, theirs, err_msg=f"nms at {threshold}: mine vs torchvision")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms(xp, seed, dtype):
    gen = np.random.default_rng(seed)
    boxes, scores = nms_inputs(gen, 2000, dtype)
    boxes = np.clip(boxes, 0.0, None)   # torchvision's shift assumes coordinates >= 0
    idxs = gen.integers(0, 5, size=2000)
    for threshold in (0.3, 0.5, 0.7):
        mine = host(batched_nms(xp.asarray(boxes), xp.asarray(scores), xp.asarray(idxs), threshold))
        # the coordinate trick on all 2000 boxes (torchvision's public function uses it up to 1000 boxes)
        theirs = tv_boxes._batched_nms_coordinate_trick(tv(boxes), tv(scores), tv(idxs), threshold).numpy()
        np.testing.assert_array_equal(mine, theirs, err_msg=f"batched_nms at {threshold}")
        mine = host(batched_nms(xp.asarray(boxes[:800]), xp.asarray(scores[:800]), xp.asarray(idxs[:800]),
                                threshold))
        theirs = tv_boxes.batched_nms(tv(boxes[:800]), tv(scores[:800]), tv(idxs[:800]), threshold).numpy()
        np.testing.assert_array_equal(mine, theirs, err_msg=f"batched_nms (800 boxes) at {threshold}")


@pytest.mark.parametrize("seed", SEEDS)
def test_batched_nms_negative_coordinates_equals_per_class_nms(xp, seed):
    """With negative coordinates our widened shift still gives class-wise NMS (torchvision's loop version)."""
    gen = np.random.default_rng(seed)
    boxes, scores = nms_inputs(gen, 1500, "float64")
    boxes -= 300.0
    idxs = gen.integers(0, 4, size=1500)
    mine = host(batched_nms(xp.asarray(boxes), xp.asarray(scores), xp.asarray(idxs), 0.5))
    theirs = tv_boxes._batched_nms_vanilla(tv(boxes), tv(scores), tv(idxs), 0.5).numpy()
    np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_and_remove_small_boxes(xp, seed, dtype):
    gen = np.random.default_rng(seed)
    boxes = random_boxes(gen, 500, dtype, max_size=30.0)
    mine = host(clip_boxes_to_image(xp.asarray(boxes), IMAGE))
    theirs = tv_boxes.clip_boxes_to_image(tv(boxes), IMAGE).numpy()
    np.testing.assert_array_equal(mine, theirs)
    for min_size in (0.0, 1e-3, 5.0, 17.5):
        mine = host(remove_small_boxes(xp.asarray(boxes), min_size))
        theirs = tv_boxes.remove_small_boxes(tv(boxes), min_size).numpy()
        np.testing.assert_array_equal(mine, theirs, err_msg=f"remove_small_boxes({min_size})")


@pytest.mark.parametrize("image_size, stride", [((608, 800), 16), ((512, 384), 16), ((256, 320), 32)])
@pytest.mark.parametrize("sizes, ratios", [((128, 256, 512), (0.5, 1.0, 2.0)),
                                           ((32, 45.5, 64), (0.25, 1.0, 1.7, 3.0))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_generate_anchors(xp, image_size, stride, sizes, ratios, dtype):
    height, width = image_size
    images = ImageList(torch.zeros(1, 3, height, width), [image_size])
    feature = torch.zeros(1, 8, height // stride, width // stride, dtype=getattr(torch, dtype))
    theirs = AnchorGenerator((sizes,), (ratios,))(images, [feature])[0]
    mine = generate_anchors(image_size, stride=stride, sizes=sizes, ratios=ratios, dtype=dtype)
    assert mine.dtype == np.dtype(dtype) and theirs.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(host(mine), theirs.numpy())
