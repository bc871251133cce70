"""Lesson 04, graded: bilinear interpolation, RoIPool and RoIAlign, forward and backward (lecture stage 4).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.roi``, gives the expected values. A backward task is fed the library's forward outputs,
so it is graded on its own. Each test belongs to the task in its name.
"""
import numpy as np
import pytest
from _grading import expect_close, expect_equal, expect_gradient

from mrcnn_edu import roi as lib

TASKS = {1: "bilinear_interpolate", 2: "roi_pool", 3: "roi_pool_backward", 4: "roi_align", 5: "roi_align_backward"}

# The lecture's 8 x 8 feature map (slides "Fast R-CNN: Region of Interest (RoI)"), row y = 0 first.
LECTURE_MAP = np.array([
    [0.88, 0.44, 0.14, 0.16, 0.37, 0.77, 0.96, 0.27],
    [0.19, 0.45, 0.57, 0.16, 0.63, 0.29, 0.71, 0.70],
    [0.66, 0.26, 0.82, 0.64, 0.54, 0.73, 0.59, 0.26],
    [0.85, 0.34, 0.76, 0.84, 0.29, 0.75, 0.62, 0.25],
    [0.32, 0.74, 0.21, 0.39, 0.34, 0.03, 0.33, 0.48],
    [0.20, 0.14, 0.16, 0.13, 0.73, 0.65, 0.96, 0.32],
    [0.19, 0.69, 0.09, 0.86, 0.88, 0.07, 0.01, 0.48],
    [0.83, 0.24, 0.97, 0.04, 0.24, 0.35, 0.50, 0.91],
])
LECTURE_FEATURES = LECTURE_MAP[None, None]           # N = 1 image, C = 1 channel


def random_case(seed, num_images=2, channels=2, size=(7, 9), num_rois=6, scale=1.0):
    """Random features and RoIs, some RoIs partly outside the map."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((num_images, channels) + size)
    extent = max(size) / scale
    corner = rng.uniform(-2, extent, size=(num_rois, 2))
    side = rng.uniform(1.0, extent / 1.5, size=(num_rois, 2))
    rois = np.column_stack([rng.integers(0, num_images, num_rois), corner, corner + side])
    return features, rois


# ------------------------------------------------------------------------------ task 1: bilinear_interpolate

@pytest.mark.parametrize("y, x, expected, why", [
    (2.0, 3.0, 0.64, "on a pixel: that pixel"),
    (2.0, 3.5, (0.64 + 0.54) / 2, "half-way between two pixels of a row: their mean"),
    (2.5, 3.5, (0.64 + 0.54 + 0.84 + 0.29) / 4, "in the middle of four pixels: their mean"),
    (0.25, 0.0, 0.75 * 0.88 + 0.25 * 0.19, "a quarter of the way down column 0"),
    (-0.5, 1.0, 0.44, "above the map by half a pixel: clamped to row 0"),
    (7.5, 7.5, 0.91, "past the last row and column: the corner pixel"),
    (-1.5, 2.0, 0.0, "more than one pixel above the map: 0"),
    (3.0, 8.5, 0.0, "more than W = 8 to the right: 0"),
])
def test_task1_bilinear_by_hand(impl, y, x, expected, why):
    expect_close(impl.bilinear_interpolate(LECTURE_MAP, y, x), expected,
                 f"bilinear_interpolate of the lecture's 8x8 map at (y={y}, x={x}), {why}",
                 inputs=dict(plane=LECTURE_MAP, y=y, x=x))


def test_task1_bilinear_random_points(impl):
    rng = np.random.default_rng(1)
    plane = rng.standard_normal((5, 6))
    points = rng.uniform(-1.5, 7.0, size=(40, 2))
    got = [impl.bilinear_interpolate(plane, float(y), float(x)) for y, x in points]
    want = [lib_bilinear(plane, float(y), float(x)) for y, x in points]
    expect_close(got, want, "bilinear_interpolate of a random 5 x 6 plane at 40 random points, some outside")


def lib_bilinear(plane, y, x):
    """The library's answer: a 1 x 1 RoI with one sample at (y, x) (as lessons/04_roi/reference.py)."""
    roi = np.array([[0.0, x - 0.5, y - 0.5, x + 0.5, y + 0.5]])
    return float(lib.roi_align(plane[None, None], roi, 1, sampling_ratio=1)[0, 0, 0, 0])


# ---------------------------------------------------------------------------------------- task 2: roi_pool

@pytest.mark.parametrize("roi, size, expected", [
    ((0, 3, 6, 7), 2, [[0.85, 0.84], [0.97, 0.96]]),
    ((0, 4, 5, 7), 3, [[0.74, 0.39, 0.34], [0.20, 0.16, 0.73], [0.83, 0.97, 0.88]]),
])
def test_task2_the_lectures_example(impl, roi, size, expected):
    rois = np.array([(0.0,) + roi])
    output, argmax = impl.roi_pool(LECTURE_FEATURES, rois, size, bins="slides")
    case = f"roi_pool {size}x{size} of the lecture's RoI (x1, y1, x2, y2) = {roi}, bins='slides'"
    inputs = dict(features=LECTURE_FEATURES, rois=rois, output_size=size, bins="slides")
    expect_close(np.asarray(output)[0, 0], expected, case + ": output", inputs=inputs)
    expect_equal(np.asarray(argmax)[0, 0], lib.roi_pool(LECTURE_FEATURES, rois, size, bins="slides")[1][0, 0],
                 case + ": argmax, the flat index y * 8 + x of each maximum", inputs=inputs)


def test_task2_caffe_bins_overlap(impl):
    rois = np.array([[0.0, 0, 3, 6, 7]])
    output, _ = impl.roi_pool(LECTURE_FEATURES, rois, 2, bins="caffe")
    expect_close(np.asarray(output)[0, 0], [[0.85, 0.96], [0.97, 0.96]],
                 "roi_pool 2x2 of the lecture's RoI (0, 3, 6, 7), bins='caffe': the right bins overlap at row 5, "
                 "so 0.96 wins both", inputs=dict(features=LECTURE_FEATURES, rois=rois, output_size=2, bins="caffe"))


@pytest.mark.parametrize("bins, scale", [("caffe", 1.0), ("slides", 1.0), ("caffe", 0.5), ("slides", 0.25)])
def test_task2_random(impl, bins, scale):
    features, rois = random_case(2, scale=scale)
    output, argmax = impl.roi_pool(features, rois, (2, 3), spatial_scale=scale, bins=bins)
    want_output, want_argmax = lib.roi_pool(features, rois, (2, 3), spatial_scale=scale, bins=bins)
    case = f"roi_pool (2, 3) of 6 random RoIs on 2 images x 2 channels of 7 x 9, spatial_scale={scale}, bins={bins!r}"
    inputs = dict(features=features, rois=rois, output_size=(2, 3), spatial_scale=scale, bins=bins)
    expect_close(output, want_output, case + ": output", inputs=inputs)
    expect_equal(argmax, want_argmax, case + ": argmax", inputs=inputs)


# ------------------------------------------------------------------------------- task 3: roi_pool_backward

def test_task3_gradient_goes_to_the_winners(impl):
    rois = np.array([[0.0, 0, 3, 6, 7]])
    _, argmax = lib.roi_pool(LECTURE_FEATURES, rois, 2, bins="caffe")
    grad_output = np.ones((1, 1, 2, 2))
    grad = impl.roi_pool_backward(grad_output, argmax, (1, 1, 8, 8))
    want = np.zeros((8, 8))
    want[3, 0] = 1.0   # 0.85
    want[7, 2] = 1.0   # 0.97
    want[5, 6] = 2.0   # 0.96 wins two bins
    expect_close(np.asarray(grad)[0, 0], want,
                 "roi_pool_backward of ones for the caffe 2x2 example: 1 on the pixels of 0.85 and 0.97, "
                 "2 on the 0.96 that wins two bins, 0 elsewhere",
                 inputs=dict(grad_output=grad_output, argmax=argmax, input_shape=(1, 1, 8, 8)))


def test_task3_random(impl):
    features, rois = random_case(3)
    rois[0] = [0, -20, -20, -15, -15]             # entirely outside the map: every bin empty
    _, argmax = lib.roi_pool(features, rois, (2, 3), spatial_scale=0.5)
    grad_output = np.random.default_rng(4).standard_normal(argmax.shape)
    expect_close(impl.roi_pool_backward(grad_output, argmax, features.shape, rois),
                 lib.roi_pool_backward(grad_output, argmax, features.shape, rois),
                 "roi_pool_backward of 6 RoIs on 2 images (one RoI outside the map: empty bins, argmax -1)",
                 inputs=dict(grad_output=grad_output, argmax=argmax, input_shape=features.shape, rois=rois))


def test_task3_matches_finite_differences(impl):
    features, rois = random_case(5, num_images=1, channels=1, size=(5, 6), num_rois=3)
    _, argmax = lib.roi_pool(features, rois, 2)
    dout = np.random.default_rng(6).standard_normal(argmax.shape)
    expect_gradient(impl.roi_pool_backward(dout, argmax, features.shape, rois),
                    lambda f: lib.roi_pool(f, rois, 2)[0], features,
                    "roi_pool_backward against finite differences of roi_pool, 3 RoIs on a 5 x 6 map", dout=dout)


# --------------------------------------------------------------------------------------- task 4: roi_align

def test_task4_on_a_ramp_each_bin_is_its_centre(impl):
    ramp = (10.0 * np.arange(6)[:, None] + np.arange(8)[None, :])[None, None]    # value 10 y + x
    rois = np.array([[0.0, 1, 1, 5, 3]])
    got = impl.roi_align(ramp, rois, 2, sampling_ratio=2)
    expect_close(np.asarray(got)[0, 0], [[17.0, 19.0], [27.0, 29.0]],
                 "roi_align 2x2 of the RoI (1, 1, 5, 3) on the ramp 10 y + x: bilinear is exact on a ramp, "
                 "so each bin gives the ramp at its centre (x = 2, 4; y = 1.5, 2.5)",
                 inputs=dict(features=ramp, rois=rois, output_size=2, sampling_ratio=2))


def test_task4_the_lectures_map(impl):
    rois = np.array([[0.0, 0, 3, 6, 7], [0.0, 0.5, 3.2, 5.6, 7.4]])
    got = impl.roi_align(LECTURE_FEATURES, rois, 2, sampling_ratio=2)
    expect_close(got, lib.roi_align(LECTURE_FEATURES, rois, 2, sampling_ratio=2),
                 "roi_align 2x2 of the lecture's RoI (0, 3, 6, 7) and of (0.5, 3.2, 5.6, 7.4), sampling_ratio=2",
                 inputs=dict(features=LECTURE_FEATURES, rois=rois, output_size=2, sampling_ratio=2))


@pytest.mark.parametrize("sampling_ratio, aligned, scale", [(2, False, 1.0), (-1, False, 1.0), (1, True, 0.5),
                                                            (0, True, 1.0), (3, False, 0.25)])
def test_task4_random(impl, sampling_ratio, aligned, scale):
    features, rois = random_case(7, scale=scale)
    got = impl.roi_align(features, rois, (2, 3), scale, sampling_ratio, aligned)
    expect_close(got, lib.roi_align(features, rois, (2, 3), scale, sampling_ratio, aligned),
                 f"roi_align (2, 3) of 6 random RoIs, spatial_scale={scale}, sampling_ratio={sampling_ratio}, "
                 f"aligned={aligned}", inputs=dict(features=features, rois=rois, output_size=(2, 3),
                                                   spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned))


# ------------------------------------------------------------------------------ task 5: roi_align_backward

def test_task5_one_sample_by_hand(impl):
    # one bin, one sample, at (y, x) = (1.5, 2.25): its gradient goes to 4 pixels with the bilinear weights
    rois = np.array([[0.0, 1.75, 1.0, 2.75, 2.0]])
    grad_output = np.ones((1, 1, 1, 1))
    grad = impl.roi_align_backward(grad_output, rois, (1, 1, 4, 5), 1, sampling_ratio=1)
    want = np.zeros((4, 5))
    want[1:3, 2:4] = [[0.375, 0.125], [0.375, 0.125]]
    expect_close(np.asarray(grad)[0, 0], want,
                 "roi_align_backward of 1 for one sample at (y=1.5, x=2.25): weights (1-ly)(1-lx) = 0.375, ...",
                 inputs=dict(grad_output=grad_output, rois=rois, input_shape=(1, 1, 4, 5), output_size=1,
                             sampling_ratio=1))


@pytest.mark.parametrize("sampling_ratio, aligned, scale", [(2, False, 1.0), (-1, True, 0.5), (0, False, 1.0)])
def test_task5_random(impl, sampling_ratio, aligned, scale):
    features, rois = random_case(8, scale=scale)
    grad_output = np.random.default_rng(9).standard_normal((len(rois), 2, 2, 3))
    got = impl.roi_align_backward(grad_output, rois, features.shape, (2, 3), scale, sampling_ratio, aligned)
    want = lib.roi_align_backward(grad_output, rois, features.shape, (2, 3), scale, sampling_ratio, aligned)
    expect_close(got, want, f"roi_align_backward (2, 3) of 6 random RoIs on 2 images, spatial_scale={scale}, "
                            f"sampling_ratio={sampling_ratio}, aligned={aligned}",
                 inputs=dict(grad_output=grad_output, rois=rois, input_shape=features.shape, output_size=(2, 3),
                             spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned))


def test_task5_matches_finite_differences(impl):
    features, rois = random_case(10, num_images=1, channels=1, size=(5, 6), num_rois=3)
    dout = np.random.default_rng(11).standard_normal((3, 1, 2, 2))
    expect_gradient(impl.roi_align_backward(dout, rois, features.shape, 2, sampling_ratio=2),
                    lambda f: lib.roi_align(f, rois, 2, sampling_ratio=2), features,
                    "roi_align_backward against finite differences of roi_align, 3 RoIs on a 5 x 6 map", dout=dout)
