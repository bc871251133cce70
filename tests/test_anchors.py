"""Stage 2 (anchors.py): k anchors at every cell of the stride-16 grid, with the lecture's numbers."""
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.anchors import base_anchors, generate_anchors, grid_size

# The 9 default anchors (sizes 128, 256, 512; ratios h/w 0.5, 1, 2), ratio-major: the values torchvision's
# AnchorGenerator prints for its default cell anchors. w = size / sqrt(ratio), h = size * sqrt(ratio),
# e.g. ratio 0.5, size 128: w = 181.02, h = 90.51, half-sides rounded to 91 and 45.
DEFAULT_BASE = np.array([
    [-91.0, -45.0, 91.0, 45.0], [-181.0, -91.0, 181.0, 91.0], [-362.0, -181.0, 362.0, 181.0],
    [-64.0, -64.0, 64.0, 64.0], [-128.0, -128.0, 128.0, 128.0], [-256.0, -256.0, 256.0, 256.0],
    [-45.0, -91.0, 45.0, 91.0], [-91.0, -181.0, 91.0, 181.0], [-181.0, -362.0, 181.0, 362.0],
])


def host(a):
    return backend.to_host(a)


def test_lecture_numbers(xp):
    """An 800 x 600 image at stride 16: a 38 x 50 grid, 1900 cells, 9 anchors each, 17100 anchors."""
    gh, gw = grid_size((600, 800), 16)
    assert (gh, gw) == (38, 50) and gh * gw == 1900
    anchors = generate_anchors((600, 800))
    assert isinstance(anchors, xp.ndarray)
    assert anchors.shape == (17100, 4) and anchors.dtype == xp.float32


def test_default_base_anchors(xp):
    base = base_anchors()
    assert base.dtype == xp.float32 and base.shape == (9, 4)
    np.testing.assert_array_equal(host(base), DEFAULT_BASE)
    widths, heights = DEFAULT_BASE[:, 2] - DEFAULT_BASE[:, 0], DEFAULT_BASE[:, 3] - DEFAULT_BASE[:, 1]
    np.testing.assert_allclose(heights / widths, np.repeat([0.5, 1.0, 2.0], 3), rtol=0.02)


def test_base_anchors_round_half_to_even(xp):
    # size 3, ratio 1: half-side 1.5 rounds to 2; size 5: 2.5 rounds to 2 (half to even, as torch.round)
    np.testing.assert_array_equal(host(base_anchors((3, 5), (1.0,))), [[-2, -2, 2, 2], [-2, -2, 2, 2]])


def test_anchor_order_location_major(xp):
    anchors = host(generate_anchors((64, 80), stride=16))       # 4 x 5 grid
    assert anchors.shape == (4 * 5 * 9, 4)
    cells = anchors.reshape(4, 5, 9, 4)                           # y outer, x inner, 9 per location
    for y, x in ((0, 0), (1, 2), (3, 4)):
        np.testing.assert_array_equal(cells[y, x], DEFAULT_BASE + [16 * x, 16 * y, 16 * x, 16 * y])
    np.testing.assert_array_equal(anchors[(1 * 5 + 2) * 9 + 4], [32 - 128, 16 - 128, 32 + 128, 16 + 128])


def test_offset_centres_anchors_in_cells(xp):
    anchors = host(generate_anchors((32, 48), stride=16, offset=0.5, dtype="float64"))
    assert anchors.dtype == np.float64 and anchors.shape == (2 * 3 * 9, 4)
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).reshape(2, 3, 9, 2)
    np.testing.assert_array_equal(centres[..., 0], np.broadcast_to([[8.0], [24.0], [40.0]], (2, 3, 9)))
    np.testing.assert_array_equal(centres[..., 1], np.broadcast_to([[[8.0]], [[24.0]]], (2, 3, 9)))
    plain = host(generate_anchors((32, 48), stride=16, dtype="float64"))
    np.testing.assert_array_equal(anchors - plain, np.full_like(plain, 8.0))


def test_grid_rounds_up_and_custom_anchors(xp):
    assert grid_size((100, 37), 16) == (7, 3)
    assert grid_size((600, 800), 32) == (19, 25)
    anchors = generate_anchors((100, 37), stride=16, sizes=(32,), ratios=(1.0, 2.0))
    assert anchors.shape == (7 * 3 * 2, 4)
    np.testing.assert_array_equal(host(anchors[:2]), [[-16, -16, 16, 16], [-11, -23, 11, 23]])
    # last location: y = 6 * 16, x = 2 * 16
    np.testing.assert_array_equal(host(anchors[-1]), [32 - 11, 96 - 23, 32 + 11, 96 + 23])


def test_float64_equals_float32(xp):
    a32 = host(generate_anchors((600, 800)))
    a64 = generate_anchors((600, 800), dtype="float64")
    assert a64.dtype == xp.float64
    np.testing.assert_array_equal(host(a64), a32)


@pytest.mark.parametrize("kwargs, name", [
    (dict(image_size=(0, 800)), "image_size"),
    (dict(image_size=(600,)), "image_size"),
    (dict(image_size=600), "image_size"),
    (dict(image_size=(600, math.nan)), "image_size"),
    (dict(image_size=(600, 800), stride=0), "stride"),
    (dict(image_size=(600, 800), stride="16"), "stride"),
    (dict(image_size=(600, 800), sizes=()), "sizes"),
    (dict(image_size=(600, 800), sizes=(128, -1)), "sizes"),
    (dict(image_size=(600, 800), sizes=128), "sizes"),
    (dict(image_size=(600, 800), ratios=()), "ratios"),
    (dict(image_size=(600, 800), ratios=(0.5, 0.0)), "ratios"),
    (dict(image_size=(600, 800), offset=math.inf), "offset"),
    (dict(image_size=(600, 800), dtype="int32"), "dtype"),
])
def test_bad_input(xp, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        generate_anchors(**kwargs)


def test_bad_input_helpers(xp):
    with pytest.raises(ValueError, match="^ratios: expected a positive number"):
        base_anchors((128,), (-1.0,))
    with pytest.raises(ValueError, match="^stride: expected a positive number"):
        grid_size((600, 800), -16)


def test_the_core_gives_the_public_anchors(xp):
    from mrcnn_edu.anchors import _generate_anchors
    want = generate_anchors((64, 96), 16, (32, 64), (0.5, 1.0, 2.0), offset=0.5)
    got = _generate_anchors((64, 96), 16, (32, 64), (0.5, 1.0, 2.0), 0.5)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(backend.to_host(got), backend.to_host(want))
