"""Stage 4: RoIPool and RoIAlign, forward and backward.

The fast library ops are checked against (1) the lecture's worked example, (2) a naive loop version written
straight from the Fast R-CNN / Mask R-CNN definitions (the loops of torchvision's C++ kernels), (3) finite
differences, and (4) the lecture's equivariance claims. Parity with torchvision itself is in
test_oracle_roi.py.
"""
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.data import lecture_feature_map
from mrcnn_edu.gradcheck import check_gradients
from mrcnn_edu.roi import roi_align, roi_align_backward, roi_pool, roi_pool_backward

LECTURE_MAP = lecture_feature_map()


# ---------------------------------------------------------------------------------------------------------
# naive references: one loop per index, read like the papers
# ---------------------------------------------------------------------------------------------------------

def naive_bilinear(plane, y, x):
    H, W = plane.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= H - 1:
        y0 = y1 = H - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= W - 1:
        x0 = x1 = W - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * plane[y0, x0] + (1 - ly) * lx * plane[y0, x1]
            + ly * (1 - lx) * plane[y1, x0] + ly * lx * plane[y1, x1])


def naive_roi_align(features, rois, out_hw, scale, sampling_ratio, aligned):
    oh, ow = out_hw
    out = np.zeros((len(rois), features.shape[1], oh, ow))
    off = 0.5 if aligned else 0.0
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        x1, y1, x2, y2 = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(bh)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(bw)
        count = max(gh * gw, 1)
        for c in range(features.shape[1]):
            for p in range(oh):
                for q in range(ow):
                    total = 0.0
                    for iy in range(gh):
                        for ix in range(gw):
                            y = y1 + p * bh + (iy + 0.5) * bh / gh
                            x = x1 + q * bw + (ix + 0.5) * bw / gw
                            total += naive_bilinear(features[int(b), c], y, x)
                    out[r, c, p, q] = total / count
    return out


def naive_roi_pool_caffe(features, rois, out_hw, scale):
    oh, ow = out_hw
    H, W = features.shape[2:]
    out = np.zeros((len(rois), features.shape[1], oh, ow))
    for r, (b, *box) in enumerate(rois):
        x1, y1, x2, y2 = (int(math.floor(v * scale + 0.5)) for v in box)
        rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        for p in range(oh):
            for q in range(ow):
                h0 = min(max(math.floor(p * rh / oh) + y1, 0), H)
                h1 = min(max(math.ceil((p + 1) * rh / oh) + y1, 0), H)
                w0 = min(max(math.floor(q * rw / ow) + x1, 0), W)
                w1 = min(max(math.ceil((q + 1) * rw / ow) + x1, 0), W)
                if h1 > h0 and w1 > w0:
                    out[r, :, p, q] = features[int(b), :, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def random_rois(rng, n, num_images, extent, min_size=0.5):
    """RoIs with corners anywhere in [-3, extent + 3]: partly outside the map on purpose."""
    a = rng.uniform(-3, extent + 3, size=(n, 2))
    size = rng.uniform(min_size, extent / 1.5, size=(n, 2))
    return np.column_stack([rng.integers(0, num_images, n), a, a + size])


# ---------------------------------------------------------------------------------------------------------
# the lecture's worked example
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("roi, size, expected", [
    ((0, 3, 6, 7), 2, [[0.85, 0.84], [0.97, 0.96]]),
    ((0, 4, 5, 7), 3, [[0.74, 0.39, 0.34], [0.20, 0.16, 0.73], [0.83, 0.97, 0.88]]),
])
def test_roi_pool_reproduces_the_lecture_example(xp, roi, size, expected):
    features = xp.asarray(LECTURE_MAP[None, None])
    out, argmax = roi_pool(features, xp.asarray([(0,) + roi], dtype=xp.float64), size, bins="slides")
    got = backend.to_host(out)[0, 0]
    np.testing.assert_array_equal(np.round(got, 2), expected, err_msg=f"RoIPool {size}x{size} of {roi}")
    # each argmax points at the pixel holding that maximum
    flat = LECTURE_MAP.ravel()[backend.to_host(argmax)[0, 0]]
    np.testing.assert_array_equal(flat, got)


def test_caffe_bins_overlap_where_the_slides_bins_do_not():
    """Fast R-CNN's bins (floor start, ceil end) overlap: the 2x2 example's top-right bin then reaches row 5."""
    out, _ = roi_pool(LECTURE_MAP[None, None], [[0, 0, 3, 6, 7]], 2, bins="caffe")
    np.testing.assert_array_equal(np.round(out[0, 0], 2), [[0.85, 0.96], [0.97, 0.96]])


# ---------------------------------------------------------------------------------------------------------
# agreement with the naive definitions
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling_ratio, aligned, scale", [(-1, False, 1.0), (2, False, 0.5), (0, True, 0.25),
                                                            (1, True, 1.0), (3, False, 1 / 16)])
def test_roi_align_matches_the_naive_definition(xp, sampling_ratio, aligned, scale):
    rng = np.random.default_rng(7)
    features = rng.standard_normal((2, 3, 9, 11))
    rois = random_rois(rng, 12, 2, 11 / scale)
    want = naive_roi_align(features, rois, (3, 4), scale, sampling_ratio, aligned)
    got = roi_align(xp.asarray(features), xp.asarray(rois), (3, 4), scale, sampling_ratio, aligned)
    np.testing.assert_allclose(backend.to_host(got), want, rtol=1e-12, atol=1e-12)


def test_roi_align_float32_stays_float32(xp):
    rng = np.random.default_rng(3)
    features = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    rois = random_rois(rng, 5, 1, 8).astype(np.float32)
    got = roi_align(xp.asarray(features), xp.asarray(rois), 2, sampling_ratio=2)
    assert got.dtype == xp.float32
    want = naive_roi_align(features.astype(np.float64), rois.astype(np.float64), (2, 2), 1.0, 2, False)
    np.testing.assert_allclose(backend.to_host(got), want, rtol=1e-5, atol=1e-5)


def test_roi_pool_caffe_matches_the_naive_definition(xp):
    rng = np.random.default_rng(11)
    features = rng.standard_normal((2, 3, 10, 7))
    rois = random_rois(rng, 15, 2, 20)
    want = naive_roi_pool_caffe(features, rois, (3, 2), 0.5)
    got, argmax = roi_pool(xp.asarray(features), xp.asarray(rois), (3, 2), 0.5)
    np.testing.assert_array_equal(backend.to_host(got), want)
    am = backend.to_host(argmax)
    b = rois[:, 0].astype(int)
    picked = features.reshape(2, 3, -1)[b[:, None, None, None], np.arange(3)[None, :, None, None], np.maximum(am, 0)]
    np.testing.assert_array_equal(np.where(am >= 0, picked, 0.0), want)


def test_roi_pool_empty_bins_give_zero_and_minus_one():
    # a RoI entirely left of the map: every bin is clipped away
    out, argmax = roi_pool(np.ones((1, 1, 4, 4)), [[0, -9, 0, -6, 3]], 2)
    np.testing.assert_array_equal(out, 0)
    np.testing.assert_array_equal(argmax, -1)


def test_roi_align_samples_outside_the_map_count_as_zero():
    # every sample of a RoI far to the left lies beyond x = -1: the output is 0, not the edge value
    out = roi_align(np.ones((1, 1, 4, 4)), [[0, -20.0, 0, -10.0, 3]], 2)
    np.testing.assert_array_equal(out, 0)
    # a RoI covering exactly the map averages samples of a constant map: 1
    np.testing.assert_allclose(roi_align(np.ones((1, 1, 4, 4)), [[0, 0, 0, 3, 3]], 2), 1.0)


# ---------------------------------------------------------------------------------------------------------
# backward: finite differences (float64) and the torchvision-free reference
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling_ratio, aligned, scale", [(-1, False, 1.0), (2, True, 0.5)])
def test_roi_align_backward_gradcheck(xp, sampling_ratio, aligned, scale):
    rng = np.random.default_rng(5)
    features = xp.asarray(rng.standard_normal((2, 2, 6, 7)))
    rois = xp.asarray(random_rois(rng, 6, 2, 7 / scale))
    args = dict(output_size=(2, 3), spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
    check_gradients(lambda f: roi_align(f, rois, **args),
                    lambda dout: roi_align_backward(dout, rois, features.shape, **args),
                    [features])


@pytest.mark.parametrize("bins", ["caffe", "slides"])
def test_roi_pool_backward_gradcheck(xp, bins):
    rng = np.random.default_rng(9)
    # distinct values far apart: no ties, so the max is differentiable at this point
    features = xp.asarray(rng.permutation(2 * 2 * 8 * 9).reshape(2, 2, 8, 9) / 10.0)
    rois = xp.asarray(random_rois(rng, 7, 2, 9, min_size=2.0))
    _, argmax = roi_pool(features, rois, (2, 3), bins=bins)
    check_gradients(lambda f: roi_pool(f, rois, (2, 3), bins=bins)[0],
                    lambda dout: roi_pool_backward(dout, argmax, features.shape, rois=rois),
                    [features])


def test_roi_pool_backward_sends_each_gradient_to_its_argmax():
    out, argmax = roi_pool(LECTURE_MAP[None, None], [[0, 0, 3, 6, 7]], 2, bins="slides")
    grad = roi_pool_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), argmax, (1, 1, 8, 8))
    want = np.zeros(64)
    want[[3 * 8 + 0, 3 * 8 + 3, 7 * 8 + 2, 5 * 8 + 6]] = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(grad.ravel(), want)


def test_roi_align_backward_is_the_adjoint_of_the_forward(xp):
    """<roi_align(f), g> == <f, roi_align_backward(g)> for a linear op: a check with many RoIs per image."""
    rng = np.random.default_rng(21)
    f = rng.standard_normal((3, 4, 12, 10))
    rois = random_rois(rng, 40, 3, 12)
    g = rng.standard_normal((40, 4, 5, 5))
    lhs = float((backend.to_host(roi_align(xp.asarray(f), xp.asarray(rois), 5)) * g).sum())
    rhs = float((f * backend.to_host(roi_align_backward(xp.asarray(g), xp.asarray(rois), f.shape, 5))).sum())
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


# ---------------------------------------------------------------------------------------------------------
# the lecture's claims: RoIAlign is translation- and scale-equivariant, RoIPool is not
# ---------------------------------------------------------------------------------------------------------

def bilinear_map(coeffs, H, W, dx=0.0, dy=0.0):
    """C x H x W samples of g_c(x, y) = a + b x + c y + d x y, shifted by (dx, dy): bilinear interpolation
    reproduces such a map exactly, so a shifted map really is the shifted function."""
    y, x = np.mgrid[0:H, 0:W].astype(float)
    x, y = x - dx, y - dy
    return np.stack([a + b * x + c * y + d * x * y for a, b, c, d in coeffs])[None]


def test_roi_align_is_translation_equivariant_and_roi_pool_is_not():
    coeffs = [(0.5, 0.3, -0.2, 0.05), (-1.0, 0.1, 0.4, -0.03)]
    roi = np.array([[0, 3.2, 2.6, 9.7, 8.1]])
    dx, dy = 0.35, 0.4
    shifted_roi = roi + [0, dx, dy, dx, dy]
    f, f_shifted = bilinear_map(coeffs, 16, 16), bilinear_map(coeffs, 16, 16, dx, dy)

    align, align_shifted = roi_align(f, roi, 7, sampling_ratio=2), roi_align(f_shifted, shifted_roi, 7, sampling_ratio=2)
    np.testing.assert_allclose(align_shifted, align, rtol=0, atol=1e-12)

    pool, _ = roi_pool(f, roi, 7)
    pool_shifted, _ = roi_pool(f_shifted, shifted_roi, 7)
    assert np.abs(pool_shifted - pool).max() > 0.05, "RoIPool should not be translation-equivariant"


def test_roi_align_is_scale_equivariant_up_to_interpolation():
    """A RoI on a map, and the same RoI scaled by 2 on the map upsampled by 2, see the same features."""
    def g(x, y):
        return np.stack([np.sin(0.3 * x) + np.cos(0.2 * y), 0.1 * x * np.cos(0.25 * y)])

    y, x = np.mgrid[0:20, 0:20].astype(float)
    y2, x2 = np.mgrid[0:40, 0:40].astype(float)
    f, f2 = g(x, y)[None], g(x2 / 2, y2 / 2)[None]
    roi = np.array([[0, 2.3, 3.1, 14.6, 12.2]])
    roi2 = roi * [1, 2, 2, 2, 2]
    out = roi_align(f, roi, 7, sampling_ratio=2)
    out2 = roi_align(f2, roi2, 7, sampling_ratio=2)
    err = np.abs(out2 - out).max()
    # bilinear interpolation errs by at most h^2 / 8 * (|g_xx| + |g_yy|) ~ 0.016 on the coarse map (h = 1)
    assert err < 0.02, f"scale-equivariance broken: max difference {err:.4f}"
    # and the check can fail: the unscaled RoI on the upsampled map sees something else
    assert np.abs(roi_align(f2, roi, 7, sampling_ratio=2) - out).max() > 0.1


# ---------------------------------------------------------------------------------------------------------
# empty and bad input
# ---------------------------------------------------------------------------------------------------------

def test_zero_rois_give_empty_outputs(xp):
    f = xp.zeros((2, 3, 5, 5))
    assert roi_align(f, xp.zeros((0, 5)), (2, 4)).shape == (0, 3, 2, 4)
    out, argmax = roi_pool(f, xp.zeros((0, 5)), 3)
    assert out.shape == argmax.shape == (0, 3, 3, 3)
    grad = roi_align_backward(xp.zeros((0, 3, 2, 4)), xp.zeros((0, 5)), (2, 3, 5, 5), (2, 4))
    assert grad.shape == (2, 3, 5, 5) and not bool(grad.any())
    assert roi_pool_backward(out, argmax, (2, 3, 5, 5), rois=xp.zeros((0, 5))).shape == (2, 3, 5, 5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(features=np.zeros((3, 5, 5))), "features"),
    (dict(rois=np.zeros((2, 4))), "rois"),
    (dict(rois=[[0, 1, 1, np.nan, 3]]), "rois"),
    (dict(rois=[[0, 3, 1, 2, 3]]), "rois"),
    (dict(rois=[[2, 1, 1, 2, 3]]), "rois"),
    (dict(rois=[[0.5, 1, 1, 2, 3]]), "rois"),
    (dict(features=np.full((1, 1, 5, 5), np.inf)), "features"),
    (dict(output_size=0), "output_size"),
    (dict(output_size=(2, -1)), "output_size"),
    (dict(spatial_scale=-1.0), "spatial_scale"),
])
@pytest.mark.parametrize("op", ["align", "pool"])
def test_bad_input_names_the_argument(op, kwargs, match):
    args = dict(features=np.zeros((1, 1, 5, 5)), rois=[[0, 1, 1, 2, 3]], output_size=2, spatial_scale=1.0)
    args.update(kwargs)
    fn = roi_align if op == "align" else roi_pool
    with pytest.raises(ValueError, match=match):
        fn(**args)


def test_bad_backward_input_names_the_argument():
    rois = [[0, 1, 1, 3, 3]]
    with pytest.raises(ValueError, match="grad_output"):
        roi_align_backward(np.zeros((1, 2, 2, 2)), rois, (1, 3, 5, 5), 2)
    with pytest.raises(ValueError, match="input_shape"):
        roi_align_backward(np.zeros((1, 3, 2, 2)), rois, (1, 3, 5), 2)
    with pytest.raises(ValueError, match="bins"):
        roi_pool(np.zeros((1, 1, 5, 5)), rois, 2, bins="nearest")
    out, argmax = roi_pool(np.zeros((2, 1, 5, 5)), rois, 2)
    with pytest.raises(ValueError, match="rois"):
        roi_pool_backward(out, argmax, (2, 1, 5, 5))
    with pytest.raises(ValueError, match="argmax"):
        roi_pool_backward(out, argmax + 100, (1, 1, 5, 5))
    with pytest.raises(TypeError, match="argmax"):
        roi_pool_backward(out, argmax.astype(float), (1, 1, 5, 5))


def test_each_core_gives_its_public_function_s_result(xp):
    """The model calls the cores (``_roi_align``, ...) on arrays it made: the same result, bit for bit."""
    from mrcnn_edu import roi
    rng = np.random.default_rng(4)
    features = xp.asarray(rng.standard_normal((2, 3, 9, 11)).astype(np.float32))
    rois = xp.asarray(random_rois(rng, 8, 2, 11 / 0.5).astype(np.float32))
    grad = xp.asarray(rng.standard_normal((8, 3, 2, 3)).astype(np.float32))
    for sampling_ratio, aligned in ((-1, False), (2, True)):
        args = (0.5, sampling_ratio, aligned)
        np.testing.assert_array_equal(backend.to_host(roi._roi_align(features, rois, (2, 3), *args)),
                                      backend.to_host(roi_align(features, rois, (2, 3), *args)))
        np.testing.assert_array_equal(
            backend.to_host(roi._roi_align_backward(grad, rois, (2, 3, 9, 11), (2, 3), *args)),
            backend.to_host(roi_align_backward(grad, rois, (2, 3, 9, 11), (2, 3), *args)))
    for bins in ("caffe", "slides"):
        out, argmax = roi_pool(features, rois, (2, 3), 0.5, bins)
        core_out, core_argmax = roi._roi_pool(features, rois, (2, 3), 0.5, bins)
        np.testing.assert_array_equal(backend.to_host(core_out), backend.to_host(out))
        np.testing.assert_array_equal(backend.to_host(core_argmax), backend.to_host(argmax))
        np.testing.assert_array_equal(
            backend.to_host(roi._roi_pool_backward(grad, argmax, (2, 3, 9, 11), rois)),
            backend.to_host(roi_pool_backward(grad, argmax, (2, 3, 9, 11), rois)))


def test_roi_pool_first_argmax_equals_argmax_with_ties(xp, rng):
    """RoIPool's max and first-maximum index over axis 0 equal ``max(0)`` and ``argmax(0)``, ties included."""
    from mrcnn_edu.roi import _max_and_first_argmax
    window = rng.integers(0, 4, (9, 5, 3, 2)).astype(np.float32)   # few values: many ties
    window[:, 0, 0, 0] = -np.inf                                     # an all-empty column: slot 0
    best, first = _max_and_first_argmax(xp.asarray(window), xp)
    np.testing.assert_array_equal(backend.to_host(best), window.max(0))
    np.testing.assert_array_equal(backend.to_host(first), window.argmax(0))


def test_slots_of_rois_in_image_order_need_no_sort(xp):
    """The model's RoIs come image by image: their table columns, found without the sort, are the sorted
    path's; and each RoI gets its own column of its image's row."""
    from mrcnn_edu.roi import _slots
    batch = xp.asarray(np.repeat([0, 1, 3], [4, 1, 6]))                 # image 2 has no RoI
    slot, most = _slots(batch, 4, xp, in_order=True)
    slot_sorted, most_sorted = _slots(batch, 4, xp)
    np.testing.assert_array_equal(backend.to_host(slot), [0, 1, 2, 3, 0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(backend.to_host(slot), backend.to_host(slot_sorted))
    assert most == most_sorted == 6
    shuffled = xp.asarray(np.array([3, 0, 3, 1, 0]))
    np.testing.assert_array_equal(backend.to_host(_slots(shuffled, 4, xp)[0]), [0, 0, 1, 0, 1])


def test_rois_that_fill_every_row_skip_the_table(xp, rng):
    """RoIs in image order with the same number in every image (the box head's 64 an image): ``_slots`` gives
    no slots (the table is the RoIs themselves, seen N x S), and RoIAlign's forward and backward through
    that plan equal the gathered path's, bit for bit. One RoI fewer and the table is back."""
    from mrcnn_edu import roi
    features = xp.asarray(rng.standard_normal((3, 4, 10, 12)).astype(np.float32))
    rois = xp.asarray(random_rois(rng, 9, 1, 40.0).astype(np.float32))
    rois[:, 0] = xp.asarray(np.repeat(np.arange(3), 3).astype(np.float32))     # 3 RoIs an image, in order
    grad = xp.asarray(rng.standard_normal((9, 4, 2, 3)).astype(np.float32))
    args = (features.shape, (2, 3), 0.25, 2, True, features.dtype)
    full = roi._align_plan(rois, *args, most=3, in_order=True)
    gathered = roi._align_plan(rois, *args, most=3)                     # not known to be in order: a table
    assert full.slot is None and gathered.slot is not None
    for planned in (roi._roi_align_planned, lambda f, p: roi._roi_align_backward_planned(grad, p)):
        np.testing.assert_array_equal(backend.to_host(planned(features, full)),
                                      backend.to_host(planned(features, gathered)))
    assert roi._align_plan(rois[:8], *args, most=3, in_order=True).slot is not None


def test_roi_align_in_blocks_of_rois_equals_one_block(xp, rng, monkeypatch):
    """Many RoIs run in blocks (``_BLOCK_ELEMENTS`` caps a block's temporary): the blocks' outputs are joined,
    their gradients added, and both equal a single block's, bit for bit."""
    from mrcnn_edu import roi
    features = xp.asarray(rng.standard_normal((2, 3, 8, 9)).astype(np.float32))
    rois = xp.asarray(random_rois(rng, 7, 2, 30.0).astype(np.float32))
    grad = xp.asarray(rng.standard_normal((7, 3, 2, 2)).astype(np.float32))
    runs = []
    for cap in (roi._BLOCK_ELEMENTS, 2 * 2 * 3 * 8 * 2):        # everything in one block; two RoI columns a block
        monkeypatch.setattr(roi, "_BLOCK_ELEMENTS", cap)
        plan = roi._align_plan(rois, features.shape, (2, 2), 0.25, 2, True, features.dtype)
        assert (len(roi._blocks(plan.Ay_t.shape[1], 2 * 2 * 3 * 8, xp)) > 1) == (cap < 1000)
        runs.append([backend.to_host(roi._roi_align_planned(features, plan)),
                     backend.to_host(roi._roi_align_backward_planned(grad, plan))])
    for one, blocks in zip(*runs):
        np.testing.assert_array_equal(one, blocks)
