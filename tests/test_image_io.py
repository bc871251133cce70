"""Image files and resizing (data/coco.py): every Pillow mode read as RGB uint8, EXIF orientation, fast
resizing of big photos that stays close to the old scikit-image result, mapping detections back."""
import warnings

import numpy as np
import pytest
from PIL import Image

from mrcnn_edu.data import DatasetError
from mrcnn_edu.data.images import (detections_to_original, read_image, read_image_resized, resize_and_pad,
                                   undo_resize_and_pad)
from mrcnn_edu.data.shapes import boxes_from_masks

ORIENTATION = 0x0112  # the EXIF tag


def save(tmp_path, img, name, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def grey(rgb):
    """The three channels of a grey image must be equal; returns one."""
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    return rgb[..., 0]


# ------------------------------------------------------------------------------ high bit depths
@pytest.mark.parametrize("mode, dtype, name", [("I;16", "<u2", "a.png"), ("I;16B", ">u2", "a.tif"),
                                               ("I;16L", "<u2", "a.tif")])
def test_16_bit_grey_scales_to_its_8_bit_gradient(tmp_path, mode, dtype, name):
    ramp = (np.arange(256) * 257).astype(dtype).reshape(1, 256).repeat(3, axis=0)   # 0, 257, ..., 65535
    img = Image.frombytes(mode, (256, 3), ramp.tobytes())
    image = read_image(save(tmp_path, img, name))
    assert image.shape == (3, 256, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(grey(image)[0], np.arange(256))     # not 255 everywhere
    # between the steps: round(v * 255 / 65535)
    values = np.array([[0, 128, 129, 32767, 65406, 65535]], dtype=dtype)
    image = read_image(save(tmp_path, Image.frombytes(mode, (6, 1), values.tobytes()), name))
    np.testing.assert_array_equal(grey(image)[0], [0, 0, 1, 127, 254, 255])


def test_32_bit_integers_in_the_16_bit_range_scale_like_16_bit(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.int32)
    img = Image.fromarray(values)
    assert img.mode == "I"
    np.testing.assert_array_equal(grey(read_image(save(tmp_path, img, "i.tif")))[0], [0, 1, 128, 255])


def test_32_bit_integers_beyond_16_bits_stretch_min_to_max(tmp_path):
    values = np.array([[-1000, 0, 1000, 600]], dtype=np.int32)
    # -1000 -> 0, 1000 -> 255, 0 -> 127.5 -> 128 (to even), 600 -> 1600 * 255 / 2000 = 204
    np.testing.assert_array_equal(grey(read_image(save(tmp_path, Image.fromarray(values), "i.tif")))[0],
                                  [0, 128, 255, 204])


def test_float_images(tmp_path):
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    assert Image.fromarray(unit).mode == "F"
    np.testing.assert_array_equal(grey(read_image(save(tmp_path, Image.fromarray(unit), "u.tif")))[0],
                                  [0, 64, 128, 255])   # x 255: 63.75 -> 64, 127.5 -> 128
    wide = np.array([[-2.0, 0.0, 6.0, np.nan]], dtype=np.float32)   # stretched, NaN black
    np.testing.assert_array_equal(grey(read_image(save(tmp_path, Image.fromarray(wide), "w.tif")))[0],
                                  [0, 64, 255, 0])     # (0 + 2) * 255 / 8 = 63.75 -> 64
    flat = np.full((2, 3), 7.5, dtype=np.float32)
    assert not read_image(save(tmp_path, Image.fromarray(flat), "f.tif")).any()


# ------------------------------------------------------------------------------ 8-bit modes
PALETTE = [10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * 759
COLOURS = [[10, 20, 30], [200, 100, 50], [0, 255, 0]]


def test_palette_with_transparency_keeps_the_palette_colour(tmp_path):
    img = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), mode="P")
    img.putpalette(PALETTE)
    img.info["transparency"] = 1                        # colour 1 transparent: its colour is kept
    np.testing.assert_array_equal(read_image(save(tmp_path, img, "p.png"))[0], COLOURS)
    img.info["transparency"] = bytes([255, 0, 128])     # one alpha per palette entry, and no warning
    path = save(tmp_path, img, "p2.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_image(path)[0], COLOURS)


def test_palette_with_alpha_band(tmp_path):
    img = Image.new("PA", (3, 1))
    img.putpalette(PALETTE)
    img.putpixel((0, 0), (1, 0))                        # colour 1, fully transparent: still its colour
    img.putpixel((1, 0), (2, 255))
    path = save(tmp_path, img, "pa.tif")
    assert Image.open(path).mode == "PA"
    np.testing.assert_array_equal(read_image(path)[0], [COLOURS[1], COLOURS[2], COLOURS[0]])


def test_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 128], [1, 2, 3, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(read_image(save(tmp_path, Image.fromarray(rgba), "a.png")), rgba[..., :3])
    la = np.array([[[100, 0], [50, 255]]], dtype=np.uint8)
    img = Image.fromarray(la, mode="LA")
    np.testing.assert_array_equal(read_image(save(tmp_path, img, "la.png"))[0], [[100] * 3, [50] * 3])


@pytest.mark.parametrize("name", ["c.tif", "c.jpg"])
def test_cmyk(tmp_path, name):
    # white, full cyan, full black, magenta 128 + yellow 255
    img = Image.frombytes("CMYK", (4, 1), bytes([0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255, 0, 128, 255, 0]))
    path = save(tmp_path, img, name, **({"quality": 100} if name.endswith("jpg") else {}))
    assert Image.open(path).mode == "CMYK"
    image = read_image(path)[0].astype(int)
    assert np.abs(image - [[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 127, 0]]).max() <= 2


def test_ycbcr(tmp_path):
    img = Image.frombytes("YCbCr", (2, 1), bytes([128, 128, 128, 76, 85, 255]))   # grey, red
    path = save(tmp_path, img, "y.tif")
    assert Image.open(path).mode == "YCbCr"
    assert np.abs(read_image(path)[0].astype(int) - [[128, 128, 128], [255, 0, 0]]).max() <= 2


def test_one_bit_and_grey(tmp_path):
    bits = Image.fromarray(np.array([[True, False, True]]))
    assert bits.mode == "1"
    np.testing.assert_array_equal(grey(read_image(save(tmp_path, bits, "b.png")))[0], [255, 0, 255])
    levels = np.array([[0, 7, 128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(grey(read_image(save(tmp_path, Image.fromarray(levels), "l.png"))), levels)


# ------------------------------------------------------------------------------ orientation
def marked(height=20, width=40):
    """An H x W image, black but for a white H/5 x W/6 block in the stored top-left corner."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:height // 5, :width // 6] = 255
    return Image.fromarray(pixels)


def with_orientation(img, value):
    exif = Image.Exif()
    exif[ORIENTATION] = value
    return {"exif": exif.tobytes()}


@pytest.mark.parametrize("orientation, shape, corner", [
    (1, (20, 40), (slice(0, 4), slice(0, 6))),      # as stored
    (3, (20, 40), (slice(16, 20), slice(34, 40))),  # half turn: the block goes bottom right
    (6, (40, 20), (slice(0, 6), slice(16, 20))),    # shown turned clockwise: stored top-left -> top right
    (8, (40, 20), (slice(34, 40), slice(0, 4))),    # counter-clockwise: stored top-left -> bottom left
])
def test_exif_orientation_is_applied(tmp_path, orientation, shape, corner):
    img = marked()
    path = save(tmp_path, img, "o.png", **with_orientation(img, orientation))
    image = read_image(path)
    assert image.shape == shape + (3,)
    expected = np.zeros(shape, dtype=np.uint8)
    expected[corner] = 255
    np.testing.assert_array_equal(grey(image), expected)


# ------------------------------------------------------------------------------ bad files
def test_missing_and_broken_files_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="gone.png: image file not found"):
        read_image(tmp_path / "gone.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DatasetError, match="text.png: cannot read the image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(DatasetError, match="text.png: cannot read the image"):
        read_image_resized(tmp_path / "text.png", 32)
    img = marked()
    img.save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:300])   # truncated
    with pytest.raises(DatasetError, match="cut.jpg: cannot read the image"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match="size: expected a positive int"):
        read_image_resized(tmp_path / "full.jpg", 0)


# ------------------------------------------------------------------------------ resizing
def old_resize_and_pad(image, masks, size):
    """The scikit-image version this module had: the reference the fast one must stay close to."""
    from skimage.transform import resize

    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = min(size, max(1, round(height * scale))), min(size, max(1, round(width * scale)))
    out_image = np.zeros((size, size, 3), dtype=np.uint8)
    out_masks = np.zeros((masks.shape[0], size, size), dtype=bool)
    scaled = resize(image, (new_h, new_w), order=1, preserve_range=True, anti_aliasing=scale < 1)
    out_image[:new_h, :new_w] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    scaled = resize(masks.transpose(1, 2, 0).astype(np.float32), (new_h, new_w), order=1,
                    anti_aliasing=scale < 1)
    out_masks[:, :new_h, :new_w] = scaled.transpose(2, 0, 1) >= 0.5
    return out_image, out_masks, scale


def photo(height, width, seed=0):
    """A smooth H x W x 3 test picture with three objects: an ellipse, a rectangle, a thin bar."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rng = np.random.default_rng(seed)
    image = np.stack([128 + 100 * np.sin(6 * x + 2 * y), 128 + 90 * np.cos(5 * y), 255 * x], axis=-1)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    masks = np.stack([((x - 0.3) / 0.2) ** 2 + ((y - 0.3) / 0.12) ** 2 < 1,
                      (x > 0.55) & (x < 0.9) & (y > 0.1) & (y < 0.6),
                      (x > 0.1) & (x < 0.8) & (y > 0.62) & (y < 0.65)])
    return image, masks


def edge_pixels(masks):
    """G x S x S: pixels within one pixel of a mask's boundary (where the threshold may go either way)."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)), mode="edge")
    shifted = [padded[:, 1 + dy:padded.shape[1] - 1 + dy, 1 + dx:padded.shape[2] - 1 + dx]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.any([s != masks for s in shifted], axis=0)


@pytest.mark.parametrize("height, width, size", [(700, 1000, 128), (1000, 700, 96), (90, 60, 128)])
def test_resize_and_pad_stays_close_to_the_scikit_image_result(height, width, size):
    image, masks = photo(height, width)
    out, out_masks, scale = resize_and_pad(image, masks, size)
    ref, ref_masks, ref_scale = old_resize_and_pad(image, masks, size)
    assert scale == ref_scale == size / max(height, width)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8 and out_masks.shape == (3, size, size)
    new_h, new_w = round(height * scale), round(width * scale)
    assert not out[new_h:].any() and not out[:, new_w:].any() and not out_masks[:, new_h:, :].any()
    difference = np.abs(out.astype(int) - ref)
    assert difference.mean() < 1.5 and difference.max() <= 40, (difference.mean(), difference.max())
    disagree = out_masks != ref_masks
    assert not (disagree & ~edge_pixels(ref_masks)).any()          # masks differ only along their edges
    assert disagree.sum() <= 0.1 * ref_masks.sum()
    np.testing.assert_allclose(boxes_from_masks(out_masks), boxes_from_masks(ref_masks), atol=1)


def test_resize_and_pad_is_the_identity_at_the_right_size():
    image, masks = photo(64, 48)
    out, out_masks, scale = resize_and_pad(image, masks, 64)
    assert scale == 1.0
    np.testing.assert_array_equal(out[:, :48], image)
    np.testing.assert_array_equal(out_masks[:, :, :48], masks)
    assert not out[:, 48:].any() and not out_masks[:, :, 48:].any()


def test_read_image_resized_equals_resize_and_pad_for_png(tmp_path):
    image, _ = photo(300, 500)
    path = save(tmp_path, Image.fromarray(image), "p.png")
    square, scale, original = read_image_resized(path, 100)
    expected, _, expected_scale = resize_and_pad(image, np.zeros((0, 300, 500), bool), 100)
    assert scale == expected_scale == 0.2 and original == (300, 500)
    np.testing.assert_array_equal(square, expected)


def test_read_image_resized_decodes_a_big_jpeg_at_a_reduced_scale(tmp_path):
    image, _ = photo(1200, 1600)
    path = save(tmp_path, Image.fromarray(image), "big.jpg", quality=95)
    square, scale, original = read_image_resized(path, 128)
    assert original == (1200, 1600) and scale == 0.08 and square.shape == (128, 128, 3)
    expected, _, _ = resize_and_pad(read_image(path), np.zeros((0, 1200, 1600), bool), 128)
    difference = np.abs(square.astype(int) - expected)
    assert difference.mean() < 1.5 and difference.max() <= 12, (difference.mean(), difference.max())
    assert not square[96:].any()                                   # 1200 * 0.08 = 96 rows, then padding


def test_read_image_resized_turns_the_photo_upright(tmp_path):
    img = marked(200, 400)
    path = save(tmp_path, img, "o.jpg", quality=95, **with_orientation(img, 6))
    square, scale, original = read_image_resized(path, 40)
    assert original == (400, 200) and scale == 0.1
    expected, _, _ = resize_and_pad(read_image(path), np.zeros((0, 400, 200), bool), 40)
    assert np.abs(square.astype(int) - expected).max() <= 12
    assert square[0, 19].min() > 200 and square[0, 0].max() < 30  # the mark is at the top right now


def test_undo_resize_and_pad_equals_resizing_the_whole_mask():
    """Resizing only around each object gives the full resize's pixels, shrinking or growing (but for a grey
    level of rounding: a pixel at 127 or 128 may fall either side of the threshold)."""
    for (height, width), size in [((300, 451), 64), ((40, 30), 64)]:
        _, masks = photo(height, width, seed=1)
        square_masks = resize_and_pad(np.zeros((height, width, 3), np.uint8), masks, size)[1]
        scale = size / max(height, width)
        new_h, new_w = round(height * scale), round(width * scale)
        boxes, back = undo_resize_and_pad(boxes_from_masks(square_masks), square_masks, scale, (height, width))
        assert back.shape == (3, height, width)
        for mask, got in zip(square_masks, back):
            grey_mask = Image.fromarray(mask[:new_h, :new_w].astype(np.uint8) * 255)
            whole = np.asarray(grey_mask.resize((width, height), Image.Resampling.BILINEAR)).astype(int)
            at_threshold = np.abs(whole - 127.5) < 1
            np.testing.assert_array_equal(got[~at_threshold], whole[~at_threshold] >= 128)
            assert at_threshold.sum() < 0.01 * whole.size
        # and the round trip gives the objects back to within a pixel of the small image
        assert np.abs(boxes_from_masks(back) - boxes_from_masks(masks)).max() <= 1 / scale + 1


# ------------------------------------------------------------------------------ detections
def test_detections_to_original_drops_the_padding_and_maps_the_rest_back():
    size, original = 100, (200, 400)                  # scale 0.25: content rows 0..49, padding below
    masks = np.zeros((3, size, size), bool)
    masks[0, 10:20, 10:30] = True                     # inside
    masks[1, 60:90, 20:40] = True                     # wholly in the padding
    masks[2, 45:50, 0:10] = True                      # on the content's last rows, box reaching into padding
    detection = {"boxes": np.array([[10, 10, 30, 20], [20, 60, 40, 90], [0, 45, 10, 70]], np.float32),
                 "scores": np.array([0.9, 0.8, 0.7], np.float32), "labels": np.array([1, 2, 3]),
                 "masks": masks, "image_id": 7}
    out = detections_to_original(detection, 0.25, original)
    np.testing.assert_array_equal(out["labels"], [1, 3])
    np.testing.assert_array_equal(out["scores"], np.float32([0.9, 0.7]))
    np.testing.assert_array_equal(out["boxes"], [[40, 40, 120, 80], [0, 180, 40, 200]])   # clipped at H
    assert out["masks"].shape == (2, 200, 400) and out["image_id"] == 7
    np.testing.assert_array_equal(boxes_from_masks(out["masks"][:1]), [[40, 40, 120, 80]])
    # bilinear x 4: an edge pixel's centre is 5/8 inside, a corner's (5/8)^2 < 1/2: the 4 corners drop out
    assert out["masks"][0].sum() == 80 * 40 - 4 and not out["masks"][1, :178].any()
    assert detection["boxes"].shape == (3, 4)          # the input is not changed


def test_detections_to_original_keeps_nothing_from_nothing_and_checks_its_input():
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int),
             "masks": np.zeros((0, 64, 64), bool)}
    out = detections_to_original(empty, 0.5, (128, 100))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 128, 100)
    with pytest.raises(ValueError, match="missing key"):
        detections_to_original({"boxes": np.zeros((0, 4))}, 0.5, (128, 100))
    with pytest.raises(ValueError, match="scale"):
        detections_to_original(empty, 0.0, (128, 100))
    with pytest.raises(ValueError, match="masks must be 1 x S x S"):
        detections_to_original(dict(empty, boxes=np.zeros((1, 4))), 0.5, (128, 100))
