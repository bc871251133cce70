"""Lesson 02, graded: the conventions of the README, one small case each (the grid's partial cells, the
anchors' dtype, centring with ``offset``).

The cases ``test_02_anchors.py`` leaves out: each states a rule of the lesson's README and fails on a solution
that breaks it (``tools/mutate_lessons.py`` plants such mistakes in the library and checks that some test
catches each). ``impl`` is the module under test, as in ``test_02_anchors.py``.
"""
import numpy as np
from _grading import expect_close, expect_equal

TASKS = {1: "grid_size", 2: "base_anchors", 3: "generate_anchors"}


# -------------------------------------------------------------------------------------- task 1: grid_size

def test_task1_a_partial_cell_counts_a_whole_one(impl):
    expect_equal(list(impl.grid_size((32, 33), 16)), [2, 3],
                 "grid_size((32, 33), 16): 32 rows of pixels fill 2 cells exactly; the 33rd column starts a third",
                 inputs=dict(image_size=(32, 33), stride=16))


# ------------------------------------------------------------------------------- task 3: generate_anchors

def test_task3_float32_by_default(impl):
    got = np.asarray(impl.generate_anchors((48, 64), 16, (32,), (1.0,)))
    expect_equal(str(got.dtype), "float32", "generate_anchors((48, 64), 16, sizes=(32,), ratios=(1,)).dtype: "
                                            "float32 unless dtype says otherwise (shifts included)",
                 inputs=dict(image_size=(48, 64), stride=16, sizes=(32,), ratios=(1.0,)))


def test_task3_offset_centres_the_anchors_in_their_cells(impl):
    anchors = np.asarray(impl.generate_anchors((600, 800), offset=0.5))
    expect_close(anchors[1417], [-8, -72, 248, 184],
                 "generate_anchors((600, 800), offset=0.5)[1417]: the 256 x 256 anchor of cell (3, 7) centred on "
                 "the middle of the cell, ((7 + 0.5) * 16, (3 + 0.5) * 16) = (120, 56)",
                 inputs=dict(image_size=(600, 800), offset=0.5))
