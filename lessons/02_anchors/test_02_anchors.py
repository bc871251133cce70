"""Lesson 02, graded: anchors on the stride-16 grid (lecture stage 2).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.anchors``, gives the expected values. Each test belongs to the task in its name.
"""
import numpy as np
import pytest
from _grading import expect_close, expect_equal

from mrcnn_edu import anchors as lib

TASKS = {1: "grid_size", 2: "base_anchors", 3: "generate_anchors"}

# The nine base anchors of the lecture (sizes 128, 256, 512; ratios h / w = 0.5, 1, 2), rows ratio-major.
LECTURE_BASE = [[-91, -45, 91, 45], [-181, -91, 181, 91], [-362, -181, 362, 181],
                [-64, -64, 64, 64], [-128, -128, 128, 128], [-256, -256, 256, 256],
                [-45, -91, 45, 91], [-91, -181, 91, 181], [-181, -362, 181, 362]]


# -------------------------------------------------------------------------------------- task 1: grid_size

def test_task1_the_lecture_grid(impl):
    gh, gw = impl.grid_size((600, 800))
    expect_equal([gh, gw, gh * gw], [38, 50, 1900],
                 "grid_size((600, 800)): (rows, columns, cells); lecture: 1900 cells",
                 inputs=dict(image_size=(600, 800)), pick=lambda grid: [grid[0], grid[1], grid[0] * grid[1]])


@pytest.mark.parametrize("image_size, stride", [((100, 100), 16), ((64, 96), 32), ((33, 17), 8)])
def test_task1_grids_that_do_not_divide(impl, image_size, stride):
    expect_equal(list(impl.grid_size(image_size, stride)), list(lib.grid_size(image_size, stride)),
                 f"grid_size({image_size}, stride={stride})", inputs=dict(image_size=image_size, stride=stride))


# ----------------------------------------------------------------------------------- task 2: base_anchors

def test_task2_the_lectures_nine_anchors(impl):
    expect_close(impl.base_anchors(), LECTURE_BASE,
                 "base_anchors() with sizes (128, 256, 512), ratios (0.5, 1, 2): one row per ratio x size", inputs={})


def test_task2_other_sizes_and_ratios(impl):
    sizes, ratios = (32, 64), (0.5, 1.0, 2.0, 3.0)
    expect_close(impl.base_anchors(sizes, ratios), lib.base_anchors(sizes, ratios),
                 f"base_anchors(sizes={sizes}, ratios={ratios})", inputs=dict(sizes=sizes, ratios=ratios))


# ------------------------------------------------------------------------------- task 3: generate_anchors

def test_task3_the_lectures_17100_anchors(impl):
    anchors = np.asarray(impl.generate_anchors((600, 800)))
    expect_equal(anchors.shape, (17100, 4), "generate_anchors((600, 800)).shape; lecture: 1900 cells x 9 = 17100")
    # anchor 9 * (3 * 50 + 7) + 4 is base anchor 4 (256 x 256) of cell (row 3, column 7), centred on (112, 48)
    inputs = dict(image_size=(600, 800))
    expect_close(anchors[9 * (3 * 50 + 7) + 4], [-16, -80, 240, 176],
                 "anchor 9 * (3 * 50 + 7) + 4: the 256 x 256 anchor of cell (3, 7), centre (7 * 16, 3 * 16)",
                 inputs=inputs, pick=lambda all_anchors: np.asarray(all_anchors)[9 * (3 * 50 + 7) + 4])
    expect_close(anchors[-1], [603, 230, 965, 954], "the last anchor: the 362 x 724 one of the last cell (37, 49)",
                 inputs=inputs, pick=lambda all_anchors: np.asarray(all_anchors)[-1])


@pytest.mark.parametrize("image_size, stride, sizes, ratios, offset", [
    ((64, 96), 16, (128, 256, 512), (0.5, 1.0, 2.0), 0.0),
    ((50, 70), 16, (32, 64), (1.0, 2.0), 0.5),
    ((64, 64), 32, (40,), (0.5, 1.0, 2.0), 0.25),
])
def test_task3_order_and_values(impl, image_size, stride, sizes, ratios, offset):
    got = impl.generate_anchors(image_size, stride, sizes, ratios, offset)
    expect_close(got, lib.generate_anchors(image_size, stride, sizes, ratios, offset),
                 f"generate_anchors({image_size}, stride={stride}, sizes={sizes}, ratios={ratios}, offset={offset})",
                 inputs=dict(image_size=image_size, stride=stride, sizes=sizes, ratios=ratios, offset=offset))


def test_task3_float64(impl):
    got = np.asarray(impl.generate_anchors((32, 48), 16, (16,), (1.0,), 0.5, dtype="float64"))
    expect_equal(str(got.dtype), "float64", "generate_anchors(..., dtype='float64').dtype")
    expect_close(got, lib.generate_anchors((32, 48), 16, (16,), (1.0,), 0.5, dtype="float64"),
                 "generate_anchors((32, 48), 16, sizes=(16,), ratios=(1,), offset=0.5): one anchor per cell",
                 inputs=dict(image_size=(32, 48), stride=16, sizes=(16,), ratios=(1.0,), offset=0.5))
