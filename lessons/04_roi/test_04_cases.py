"""Lesson 04, graded: the conventions of the README, one small case each, worked out by hand.

RoIPool's corners on .5 (C's round: halves away from zero) under both bin rules; empty bins; the pixel at
flat index 0 winning a bin; RoIAlign with ``aligned`` False and True on a ramp, where every bin reads the
ramp at its centre; a RoI smaller than one bin (the minimum size 1 only when ``aligned=False``, as
torchvision); samples exactly on the map's border; maps one pixel high or wide; images without RoIs; no
RoIs at all; float32 kept. ``impl`` is the module under test, as in ``test_04_roi.py``; ``tools/mutate_lessons.py``
checks that a small mistake planted in the library fails some test here or there.
"""
import numpy as np
from _grading import expect_close, expect_equal

from mrcnn_edu import roi as lib

TASKS = {1: "bilinear_interpolate", 2: "roi_pool", 3: "roi_pool_backward", 4: "roi_align", 5: "roi_align_backward"}

# A 6 x 6 ramp for RoIPool, value 6 y + x = the flat index: the maximum of a window is its bottom-right pixel.
POOL_RAMP = np.arange(36, dtype=float).reshape(1, 1, 6, 6)
# An 8 x 8 ramp for RoIAlign, value 10 y + x: bilinear interpolation is exact on it, so a bin's average of a
# symmetric grid of samples is the ramp at the bin's centre.
ALIGN_RAMP = (10.0 * np.arange(8)[:, None] + np.arange(8)[None, :])[None, None]


def uneven_case(seed):
    """3 images, RoIs in images 0 (three) and 2 (one), none in image 1."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((3, 2, 5, 6))
    rois = np.array([[0, 0.5, 0.5, 4.0, 3.5], [2, 1.0, 0.0, 5.5, 4.5], [0, 2.2, 1.1, 3.3, 4.4],
                     [0, -1.0, -0.5, 2.0, 2.0]])
    return features, rois


# ------------------------------------------------------------------------------ task 1: bilinear_interpolate

def test_task1_points_exactly_on_the_border(impl):
    plane = np.arange(20, dtype=float).reshape(4, 5)   # value 5 y + x
    cases = [(-1.0, 2.0, 2.0, "y = -1 exactly: moved to row 0"),
             (4.0, 2.0, 17.0, "y = H = 4 exactly: the last row"),
             (1.0, 5.0, 9.0, "x = W = 5 exactly: the last column"),
             (1.0, -1.0, 5.0, "x = -1 exactly: moved to column 0"),
             (-1.0001, 2.0, 0.0, "y just below -1: outside, 0"),
             (1.0, 5.0001, 0.0, "x just beyond W: outside, 0")]
    for y, x, want, why in cases:
        expect_close(impl.bilinear_interpolate(plane, y, x), want,
                     f"bilinear_interpolate of the 4 x 5 plane 5 y + x at (y={y}, x={x}): {why}",
                     inputs=dict(plane=plane, y=y, x=x))


# ---------------------------------------------------------------------------------------- task 2: roi_pool

def test_task2_corners_on_half_pixels_round_away_from_zero(impl):
    # spatial_scale 0.5 puts the RoI (1, 1, 5, 5) at (0.5, 0.5, 2.5, 2.5): C's round gives (1, 1, 3, 3),
    # 3 pixels a side (NumPy's np.round, half to even, would give (0, 0, 2, 2))
    rois = np.array([[0.0, 1, 1, 5, 5]])
    cases = [(1, "caffe", [[21]], "one bin, pixels 1..3: the maximum is pixel (3, 3) = 21"),
             (2, "slides", [[7, 9], [19, 21]], "slides' bins [1, 2) and [2, 4) on both axes"),
             (2, "caffe", [[14, 15], [20, 21]], "caffe's bins [1, 3) and [2, 4) (floor and ceil of 1.5) on both axes")]
    for size, bins, want, why in cases:
        output, argmax = impl.roi_pool(POOL_RAMP, rois, size, spatial_scale=0.5, bins=bins)
        case = f"roi_pool {size}x{size}, bins={bins!r}, of the RoI (1, 1, 5, 5) at spatial_scale 0.5 on the 6 x 6 " \
               f"ramp 6 y + x: corners (0.5, 0.5, 2.5, 2.5) round to (1, 1, 3, 3); {why}"
        inputs = dict(features=POOL_RAMP, rois=rois, output_size=size, spatial_scale=0.5, bins=bins)
        expect_close(np.asarray(output)[0, 0], want, case + ": output", inputs=inputs)
        expect_equal(np.asarray(argmax)[0, 0], want, case + ": argmax (the ramp's value is the flat index)",
                     inputs=inputs)


def test_task2_a_negative_half_rounds_away_from_zero_and_empty_bins(impl):
    # x from -2.5 to 2.5 rounds to -3 .. 3 (extent 7); half to even would give -2 .. 2 (extent 5)
    rois = np.array([[0.0, -2.5, 0, 2.5, 5]])
    cases = [("slides", [[0, 15], [0, 33]], [[-1, 15], [-1, 33]],
              "columns [-3, 0) (outside the map: an empty bin, output 0 and argmax -1) and [0, 4); rows [0, 3) and "
              "[3, 6)"),
             ("caffe", [[12, 15], [30, 33]], [[12, 15], [30, 33]],
              "columns [-3, 1) clipped to [0, 1) and [0, 4) (floor and ceil of 3.5); rows [0, 3) and [3, 6)")]
    for bins, want, want_argmax, why in cases:
        output, argmax = impl.roi_pool(POOL_RAMP, rois, 2, bins=bins)
        case = f"roi_pool 2x2, bins={bins!r}, of the RoI (-2.5, 0, 2.5, 5) on the 6 x 6 ramp 6 y + x: x1 = -2.5 " \
               f"rounds to -3 and x2 = 2.5 to 3; {why}"
        inputs = dict(features=POOL_RAMP, rois=rois, output_size=2, bins=bins)
        expect_close(np.asarray(output)[0, 0], want, case + ": output", inputs=inputs)
        expect_equal(np.asarray(argmax)[0, 0], want_argmax, case + ": argmax", inputs=inputs)


def test_task2_a_roi_outside_the_map(impl):
    rois = np.array([[0.0, 20, 20, 25, 25]])
    output, argmax = impl.roi_pool(POOL_RAMP, rois, (2, 3))
    inputs = dict(features=POOL_RAMP, rois=rois, output_size=(2, 3))
    expect_close(output, np.zeros((1, 1, 2, 3)), "roi_pool (2, 3) of a RoI entirely outside the 6 x 6 map: every bin "
                                                 "is empty, output 0", inputs=inputs)
    expect_equal(argmax, np.full((1, 1, 2, 3), -1), "the same: argmax -1 in every empty bin", inputs=inputs)


def test_task2_no_rois_and_float32(impl):
    features = POOL_RAMP.astype(np.float32)
    none = np.zeros((0, 5))
    output, argmax = impl.roi_pool(features, none, (2, 3))
    inputs = dict(features=features, rois=none, output_size=(2, 3))
    expect_equal([np.shape(output), np.shape(argmax)], [(0, 1, 2, 3), (0, 1, 2, 3)],
                 "roi_pool of 0 RoIs: (output, argmax) shaped R x C x oh x ow with R = 0", inputs=inputs)
    output, _ = impl.roi_pool(features, np.array([[0.0, 1, 1, 4, 4]]), 2)
    expect_equal(str(np.asarray(output).dtype), "float32", "roi_pool of float32 features: float32 output",
                 inputs=dict(features=features, rois=np.array([[0.0, 1, 1, 4, 4]]), output_size=2))


# ------------------------------------------------------------------------------- task 3: roi_pool_backward

def test_task3_the_pixel_at_flat_index_0_and_an_empty_bin(impl):
    # bin 0 is won by pixel (0, 0), whose flat index is 0 (a winner, not "empty"); bin 1 is empty (-1)
    argmax = np.array([[[[0, -1]]]])
    grad_output = np.array([[[[5.0, 7.0]]]])
    want = np.zeros((1, 1, 6, 6))
    want[0, 0, 0, 0] = 5.0
    expect_close(impl.roi_pool_backward(grad_output, argmax, (1, 1, 6, 6)), want,
                 "roi_pool_backward of (5, 7) with argmax (0, -1): 5 goes to pixel (0, 0), flat index 0; the empty "
                 "bin's 7 goes nowhere", inputs=dict(grad_output=grad_output, argmax=argmax, input_shape=(1, 1, 6, 6)))


def test_task3_no_rois_and_float32(impl):
    shape = (2, 1, 3, 4)
    none = np.zeros((0, 1, 2, 2), dtype=np.float32)
    got = impl.roi_pool_backward(none, np.zeros((0, 1, 2, 2), dtype=np.int64), shape, np.zeros((0, 5)))
    expect_close(got, np.zeros(shape), "roi_pool_backward of 0 RoIs (grad_output and argmax 0 x 1 x 2 x 2): zeros of "
                                       "input_shape (2, 1, 3, 4)")
    expect_equal(str(np.asarray(got).dtype), "float32", "roi_pool_backward of a float32 grad_output: float32")
    grad = np.ones((1, 1, 1, 1), dtype=np.float32)
    got = impl.roi_pool_backward(grad, np.array([[[[3]]]]), (1, 1, 2, 2))
    expect_equal(str(np.asarray(got).dtype), "float32", "roi_pool_backward of a float32 grad_output (one bin): float32",
                 inputs=dict(grad_output=grad, argmax=np.array([[[[3]]]]), input_shape=(1, 1, 2, 2)))


# --------------------------------------------------------------------------------------- task 4: roi_align

def test_task4_the_ramp_aligned_and_not(impl):
    rois = np.array([[0.0, 1, 1, 5, 3]])
    for aligned, want, centres in [(False, [[17, 19], [27, 29]], "x = 2, 4 and y = 1.5, 2.5"),
                                   (True, [[11.5, 13.5], [21.5, 23.5]], "x = 1.5, 3.5 and y = 1, 2 (half a pixel up "
                                                                        "and to the left)")]:
        for ratio in (2, -1):
            got = impl.roi_align(ALIGN_RAMP, rois, 2, sampling_ratio=ratio, aligned=aligned)
            expect_close(np.asarray(got)[0, 0], want,
                         f"roi_align 2x2 of the RoI (1, 1, 5, 3) on the ramp 10 y + x, sampling_ratio={ratio}, "
                         f"aligned={aligned}: each bin reads the ramp at its centre, {centres}",
                         inputs=dict(features=ALIGN_RAMP, rois=rois, output_size=2, sampling_ratio=ratio,
                                     aligned=aligned))


def test_task4_a_roi_smaller_than_one_bin(impl):
    # (2, 2, 2.25, 2.5) is 0.25 x 0.5. aligned=False forces it to 1 x 1 (torchvision's legacy rule): one sample
    # at (2.5, 2.5). aligned=True keeps its size, shifted by -0.5: one sample at x = 1.5 + 0.125, y = 1.5 + 0.25
    rois = np.array([[0.0, 2, 2, 2.25, 2.5]])
    for aligned, want in [(False, 27.5), (True, 19.125)]:
        got = impl.roi_align(ALIGN_RAMP, rois, 1, sampling_ratio=-1, aligned=aligned)
        expect_close(np.asarray(got)[0, 0], [[want]],
                     f"roi_align 1x1 of the 0.25 x 0.5 RoI (2, 2, 2.25, 2.5) on the ramp 10 y + x, aligned={aligned}: "
                     + ("the minimum size 1 applies, the sample is at (y, x) = (2.5, 2.5)" if not aligned else
                        "no minimum size with aligned=True, the sample is at (y, x) = (1.75, 1.625)"),
                     inputs=dict(features=ALIGN_RAMP, rois=rois, output_size=1, sampling_ratio=-1, aligned=aligned))
    rois = np.array([[0.0, 2, 2, 3, 2.5]])
    for aligned, want in [(False, [[24.75, 25.25], [29.75, 30.25]]), (True, [[18.0, 18.5], [20.5, 21.0]])]:
        got = impl.roi_align(ALIGN_RAMP, rois, 2, sampling_ratio=-1, aligned=aligned)
        expect_close(np.asarray(got)[0, 0], want,
                     f"roi_align 2x2 of the 1 x 0.5 RoI (2, 2, 3, 2.5) on the ramp 10 y + x, aligned={aligned}: "
                     + ("its height is forced to 1, bins 0.5 x 0.5, samples at x, y = 2.25, 2.75" if not aligned else
                        "bins 0.5 wide and 0.25 high, samples at x = 1.75, 2.25 and y = 1.625, 1.875"),
                     inputs=dict(features=ALIGN_RAMP, rois=rois, output_size=2, sampling_ratio=-1, aligned=aligned))


def test_task4_a_roi_of_zero_width_or_height(impl):
    # (3, 2, 3, 4) is 0 wide and 2 high. aligned=False forces the width to 1: 2 bins 0.5 wide, samples at
    # x = 3.25, 3.75 (and y = 2.5, 3.5). aligned=True keeps the width 0: the adaptive grid has ceil(0) = 0
    # samples a bin, and a bin without samples is 0 (as torchvision); a fixed sampling_ratio=2 still samples
    # at x = 3 - 0.5 and y = 2, 3. The same RoI turned on its side, on the ramp turned likewise, gives the same
    cases = [(False, -1, [[33.25, 33.75]], "the width is forced to 1"),
             (True, -1, [[0.0, 0.0]], "0 samples a bin (ceil of a 0 bin width): 0"),
             (True, 2, [[27.5, 27.5]], "2 x 2 samples at x = 2.5, y = 2 and 3")]
    turned = np.ascontiguousarray(ALIGN_RAMP.transpose(0, 1, 3, 2))      # value 10 x + y
    for features, rois, size, ramp, name in [(ALIGN_RAMP, [[0.0, 3, 2, 3, 4]], (1, 2), "10 y + x", "zero-width"),
                                             (turned, [[0.0, 2, 3, 4, 3]], (2, 1), "10 x + y", "zero-height")]:
        rois = np.array(rois)
        for aligned, ratio, want, why in cases:
            want = np.array(want) if size == (1, 2) else np.array(want).T
            got = impl.roi_align(features, rois, size, sampling_ratio=ratio, aligned=aligned)
            expect_close(np.asarray(got)[0, 0], want,
                         f"roi_align {size} of the {name} RoI {tuple(rois[0, 1:])} on the ramp {ramp}, "
                         f"sampling_ratio={ratio}, aligned={aligned}: {why.replace('width', name[5:])}",
                         inputs=dict(features=features, rois=rois, output_size=size, sampling_ratio=ratio,
                                     aligned=aligned))


def test_task4_samples_exactly_on_the_border(impl):
    # one bin, one sample (sampling_ratio=1) at the RoI's centre
    rois = np.array([[0.0, 7.5, 2.5, 8.5, 3.5],      # x = W = 8: the last column, f(3, 7) = 37
                     [0.0, -1.5, 2.5, -0.5, 3.5],    # x = -1: moved to column 0, f(3, 0) = 30
                     [0.0, 2.5, -1.5, 3.5, -0.5],    # y = -1: moved to row 0, f(0, 3) = 3
                     [0.0, 2.5, 7.5, 3.5, 8.5],      # y = H = 8: the last row, f(7, 3) = 73
                     [0.0, 7.75, 2.5, 8.75, 3.5],    # x = 8.25 > W: outside, 0
                     [0.0, 2.5, -1.75, 3.5, -0.75]])  # y = -1.25 < -1: outside, 0
    got = impl.roi_align(ALIGN_RAMP, rois, 1, sampling_ratio=1)
    expect_close(np.asarray(got).reshape(-1), [37, 30, 3, 73, 0, 0],
                 "roi_align 1x1, sampling_ratio=1, of 6 RoIs whose one sample lies at x = 8, x = -1, y = -1, y = 8 "
                 "(on the border of the 8 x 8 ramp 10 y + x: the edge pixel) and at x = 8.25, y = -1.25 (outside: 0)",
                 inputs=dict(features=ALIGN_RAMP, rois=rois, output_size=1, sampling_ratio=1))


def test_task4_maps_one_pixel_high_or_wide(impl):
    row = np.arange(5, dtype=float).reshape(1, 1, 1, 5)
    rois = np.array([[0.0, 0.5, -0.5, 3.5, 0.5]])
    expect_close(np.asarray(impl.roi_align(row, rois, (1, 3), sampling_ratio=1))[0, 0], [[1, 2, 3]],
                 "roi_align (1, 3), sampling_ratio=1, of the RoI (0.5, -0.5, 3.5, 0.5) on the 1 x 5 map 0 1 2 3 4: "
                 "samples at x = 1, 2, 3 on the only row",
                 inputs=dict(features=row, rois=rois, output_size=(1, 3), sampling_ratio=1))
    column = row.reshape(1, 1, 5, 1)
    rois_t = np.array([[0.0, -0.5, 0.5, 0.5, 3.5]])
    expect_close(np.asarray(impl.roi_align(column, rois_t, (3, 1), sampling_ratio=1))[0, 0], [[1], [2], [3]],
                 "roi_align (3, 1), sampling_ratio=1, of the RoI (-0.5, 0.5, 0.5, 3.5) on the 5 x 1 map: samples at "
                 "y = 1, 2, 3 on the only column",
                 inputs=dict(features=column, rois=rois_t, output_size=(3, 1), sampling_ratio=1))


def test_task4_images_without_rois(impl):
    features, rois = uneven_case(1)
    for aligned in (False, True):
        expect_close(impl.roi_align(features, rois, (2, 3), 1.0, -1, aligned),
                     lib.roi_align(features, rois, (2, 3), 1.0, -1, aligned),
                     f"roi_align (2, 3), aligned={aligned}, of 4 RoIs on 3 images: three in image 0, one in image 2, "
                     "none in image 1", inputs=dict(features=features, rois=rois, output_size=(2, 3), aligned=aligned))


def test_task4_no_rois_and_float32(impl):
    features = ALIGN_RAMP.astype(np.float32)
    none = np.zeros((0, 5))
    got = impl.roi_align(features, none, (2, 3))
    expect_equal(np.shape(got), (0, 1, 2, 3), "roi_align of 0 RoIs: shape R x C x oh x ow with R = 0",
                 inputs=dict(features=features, rois=none, output_size=(2, 3)))
    expect_equal(str(np.asarray(got).dtype), "float32", "roi_align of 0 RoIs on float32 features: float32")
    rois = np.array([[0.0, 1, 1, 5, 3]])
    got = impl.roi_align(features, rois, 2, sampling_ratio=2)
    expect_equal(str(np.asarray(got).dtype), "float32", "roi_align of float32 features: float32 output",
                 inputs=dict(features=features, rois=rois, output_size=2, sampling_ratio=2))


# ------------------------------------------------------------------------------ task 5: roi_align_backward

def test_task5_images_without_rois(impl):
    features, rois = uneven_case(2)
    grad_output = np.random.default_rng(3).standard_normal((len(rois), 2, 2, 3))
    for aligned in (False, True):
        expect_close(impl.roi_align_backward(grad_output, rois, features.shape, (2, 3), 1.0, -1, aligned),
                     lib.roi_align_backward(grad_output, rois, features.shape, (2, 3), 1.0, -1, aligned),
                     f"roi_align_backward (2, 3), aligned={aligned}, of 4 RoIs on 3 images: three in image 0, one in "
                     "image 2, none in image 1 (whose gradient is 0)",
                     inputs=dict(grad_output=grad_output, rois=rois, input_shape=features.shape, output_size=(2, 3),
                                 aligned=aligned))


def test_task5_small_rois_the_border_and_thin_maps(impl):
    # the adjoint of the forward: sum(roi_align(f) * g) == sum(f * roi_align_backward(g)), for every f and g
    rng = np.random.default_rng(4)
    rois = np.array([[0.0, 2, 2, 2.25, 2.5], [0.0, 7.5, 2.5, 8.5, 3.5], [0.0, -1.5, -1.5, 0.5, 1.0],
                     [0.0, 0.5, 0.5, 3.5, 0.7]])
    for shape in [(1, 1, 8, 8), (1, 1, 1, 8), (1, 1, 8, 1)]:
        for aligned in (False, True):
            grad_output = rng.standard_normal((len(rois), 1, 2, 2))
            expect_close(impl.roi_align_backward(grad_output, rois, shape, 2, 1.0, -1, aligned),
                         lib.roi_align_backward(grad_output, rois, shape, 2, 1.0, -1, aligned),
                         f"roi_align_backward 2x2 on a map of shape {shape}, aligned={aligned}, of a RoI smaller "
                         "than a bin, one on the border, one partly outside and a thin one",
                         inputs=dict(grad_output=grad_output, rois=rois, input_shape=shape, output_size=2,
                                     aligned=aligned))


def test_task5_a_roi_of_zero_width(impl):
    rois = np.array([[0.0, 3, 2, 3, 4]])
    grad_output = np.ones((1, 1, 1, 2))
    for aligned in (False, True):
        expect_close(impl.roi_align_backward(grad_output, rois, (1, 1, 8, 8), (1, 2), 1.0, -1, aligned),
                     lib.roi_align_backward(grad_output, rois, (1, 1, 8, 8), (1, 2), 1.0, -1, aligned),
                     f"roi_align_backward (1, 2) of ones for the zero-width RoI (3, 2, 3, 4), aligned={aligned}: "
                     + ("the width forced to 1, 2 x 2 samples a bin" if not aligned else "no samples: no gradient"),
                     inputs=dict(grad_output=grad_output, rois=rois, input_shape=(1, 1, 8, 8), output_size=(1, 2),
                                 aligned=aligned))


def test_task5_no_rois_and_float32(impl):
    none = np.zeros((0, 1, 2, 2), dtype=np.float32)
    got = impl.roi_align_backward(none, np.zeros((0, 5)), (2, 1, 3, 4), 2)
    expect_close(got, np.zeros((2, 1, 3, 4)), "roi_align_backward of 0 RoIs (grad_output 0 x 1 x 2 x 2): zeros of "
                                              "input_shape (2, 1, 3, 4)")
    expect_equal(str(np.asarray(got).dtype), "float32", "roi_align_backward of 0 RoIs, float32 grad_output: float32")
    grad = np.ones((1, 1, 2, 2), dtype=np.float32)
    rois = np.array([[0.0, 1, 1, 5, 3]])
    got = impl.roi_align_backward(grad, rois, (1, 1, 8, 8), 2, sampling_ratio=2)
    expect_equal(str(np.asarray(got).dtype), "float32", "roi_align_backward of a float32 grad_output: float32",
                 inputs=dict(grad_output=grad, rois=rois, input_shape=(1, 1, 8, 8), output_size=2, sampling_ratio=2))
