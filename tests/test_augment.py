"""Training augmentations (data/augment.py): flip and scale jitter keep image, masks, boxes and classes
consistent, drop the objects that leave the square, and depend on nothing but the rng they are given."""
import numpy as np
import pytest

from mrcnn_edu.data.augment import augment, flip_horizontal, scale_about_origin
from mrcnn_edu.data.shapes import boxes_from_masks

S = 48


def sample():
    """An S x S square as resize_and_pad leaves it: content 48 x 36 at the left, black padding at the right;
    three rectangles with classes 1, 2, 3."""
    rng = np.random.default_rng(5)
    image = np.zeros((S, S, 3), np.uint8)
    image[:, :36] = rng.integers(1, 256, (S, 36, 3))
    masks = np.zeros((3, S, S), bool)
    masks[0, 4:12, 2:10] = True
    masks[1, 20:40, 12:30] = True
    masks[2, 30:34, 24:34] = True
    return image, masks, np.array([1, 2, 3])


def flips(seed):
    """Whether augment flips with the generator of this seed: its first draw is the flip's coin."""
    return np.random.default_rng(seed).random() < 0.5


def test_flip_mirrors_image_masks_and_boxes_together():
    image, masks, class_ids = sample()
    outcomes = set()
    for seed in range(8):
        out, out_masks, out_ids = augment(image, masks, class_ids, np.random.default_rng(seed))
        outcomes.add(flips(seed))
        np.testing.assert_array_equal(out_ids, class_ids)
        if flips(seed):
            np.testing.assert_array_equal(out, image[:, ::-1])
            np.testing.assert_array_equal(out_masks, masks[:, :, ::-1])
            x1, y1, x2, y2 = boxes_from_masks(masks).T
            np.testing.assert_array_equal(boxes_from_masks(out_masks), np.stack([S - x2, y1, S - x1, y2], 1))
            assert not out[:, :S - 36].any()                 # the padding moved to the left
        else:
            np.testing.assert_array_equal(out, image)
            np.testing.assert_array_equal(out_masks, masks)
    assert outcomes == {True, False}


def test_flip_false_never_flips_and_draws_nothing():
    image, masks, class_ids = sample()
    rng = np.random.default_rng(3)
    for _ in range(5):
        out, out_masks, _ = augment(image, masks, class_ids, rng, flip=False)
        np.testing.assert_array_equal(out, image)
        np.testing.assert_array_equal(out_masks, masks)
    assert rng.random() == np.random.default_rng(3).random()   # the generator was not touched


def test_same_rng_state_same_output():
    image, masks, class_ids = sample()
    results = [augment(image, masks, class_ids, np.random.default_rng([7, step]), scale_range=(0.6, 1.4))
               for step in (0, 1, 0)]
    for a, b in zip(results[0], results[2]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[0][0], results[1][0])   # another step, another augmentation


def test_scale_jitter_scales_each_box_about_the_origin():
    image, masks, class_ids = sample()
    for seed in range(6):
        rng_copy = np.random.default_rng(seed)
        factor = rng_copy.uniform(0.5, 1.5)                  # with flip=False the scale is the first draw
        t = round(S * factor) / S                            # the factor the pixels really get
        out, out_masks, out_ids = augment(image, masks, class_ids, np.random.default_rng(seed), flip=False,
                                          scale_range=(0.5, 1.5))
        expected = np.clip(boxes_from_masks(masks) * t, 0, S)
        np.testing.assert_array_equal(out_ids, class_ids)    # nothing leaves a 48 square at these scales
        assert np.abs(boxes_from_masks(out_masks) - expected).max() <= 1, (seed, factor)
        if t < 1:
            assert not out[round(S * t):].any()              # the scaled content ends, black padding after


def test_scale_about_origin_with_a_known_factor():
    image, masks, _ = sample()
    out, out_masks = scale_about_origin(image, masks, 0.5)
    np.testing.assert_array_equal(boxes_from_masks(out_masks), boxes_from_masks(masks) / 2)
    # 48 x 36 content -> 24 x 18; the antialiasing filter blurs the content's edge into column 18
    assert not out[24:].any() and not out[:, 19:].any() and out[:24, 18].mean() < out[:24, :18].mean() / 2
    mean_before, mean_after = image[:, :36].mean(), out[:24, :18].mean()
    assert abs(mean_before - mean_after) < 3                 # the content is shrunk, not replaced


def test_objects_pushed_out_of_the_crop_are_dropped_with_their_class():
    image, masks, class_ids = sample()
    out, out_masks, out_ids = augment(image, masks, class_ids, np.random.default_rng(0), flip=False,
                                      scale_range=(2.0, 2.0))
    # x 2: mask 0 (2..10) -> 4..20 stays; mask 1 rows 20..40 -> 40..80 keeps rows 40..47; mask 2 rows
    # 30..34 -> 60..68 leaves the 48 x 48 crop
    np.testing.assert_array_equal(out_ids, [1, 2])
    assert out_masks.shape == (2, S, S)
    np.testing.assert_array_equal(boxes_from_masks(out_masks), [[4, 8, 20, 24], [24, 40, 48, 48]])


def test_tiny_objects_vanish_when_shrunk():
    image, masks, class_ids = sample()
    masks[2] = False
    masks[2, 45, 45] = True                                  # one pixel, under half a pixel at x 0.5
    _, out_masks, out_ids = augment(image, masks, class_ids, np.random.default_rng(0), flip=False,
                                    scale_range=(0.5, 0.5))
    np.testing.assert_array_equal(out_ids, [1, 2])
    assert out_masks.shape == (2, S, S)


def test_flip_horizontal_is_its_own_inverse():
    image, masks, _ = sample()
    back = flip_horizontal(*flip_horizontal(image, masks))
    np.testing.assert_array_equal(back[0], image)
    np.testing.assert_array_equal(back[1], masks)


def test_bad_arguments():
    image, masks, class_ids = sample()
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        augment(image, masks, class_ids, np.random.RandomState(0))
    for bad in [(0, 1), (1.5, 1.2), (1, float("inf")), 1.2]:
        with pytest.raises(ValueError, match="scale_range"):
            augment(image, masks, class_ids, rng, scale_range=bad)
    with pytest.raises(ValueError, match="masks: expected G x 48 x 48 bool"):
        augment(image, masks[:, :40], class_ids, rng)
    with pytest.raises(ValueError, match="class_ids: expected 3 ids"):
        augment(image, masks, class_ids[:2], rng)
    with pytest.raises(ValueError, match="image: expected H x W x 3 uint8"):
        augment(image.astype(np.float32), masks, class_ids, rng)
