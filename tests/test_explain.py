"""A detection explained by its gradient: the hand-written backward to the pixels against central
differences (float64, proposal and box held fixed), the model left as found, and a trained model looking at
its object."""
import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.data.shapes import validation_set
from mrcnn_edu.explain import (_mask_mean_and_gradient, _score_and_gradient, _scratch_state, explain_detection,
                               explanation_figure)
from mrcnn_edu.gradcheck import rel_error
from mrcnn_edu.inference import load_model
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.visualize import save

SMALL = dict(image_size=64, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(48.0, 64.0),
             box_hidden=32, mask_channels=8, mask_convs=1, roi_batch=16)
BOX = np.array([14.3, 17.6, 45.2, 41.9])          # the fixed proposal / detection box of the checks
# (y, x, channel): three pixels inside BOX, three outside
PIXELS = [(20, 20, 0), (30, 40, 1), (40, 16, 2), (3, 5, 1), (60, 30, 0), (25, 55, 2)]


def float64_model(config=SMALL, seed=1):
    """A fresh model in float64, its zero biases nudged off ReLU's kink (as tests/test_model.py does)."""
    model = MaskRCNN(ModelConfig(**config), rng=np.random.default_rng(seed))
    nudge = np.random.default_rng(7)
    for m in model.modules():
        m.params = {k: v.astype(np.float64) + (nudge.normal(0, 0.01, v.shape) if k == "bias" else 0)
                    for k, v in m.params.items()}
    return model


def square_image(size=64):
    """A noisy grey background with a coloured square (no pixel on a flat plateau)."""
    rng = np.random.default_rng(3)
    image = rng.uniform(90, 130, (size, size, 3))
    image[18:42, 15:45] = rng.uniform(200, 240, (24, 30, 3)) * [1.0, 0.4, 0.3]
    return image


def numeric_gradient(f, pixels, eps=1e-3):
    """Central differences of ``f(pixels)`` (a scalar) at the ``PIXELS`` entries."""
    out = []
    for i in PIXELS:
        old = pixels[i]
        pixels[i] = old + eps
        plus = f(pixels)
        pixels[i] = old - eps
        minus = f(pixels)
        pixels[i] = old
        out.append((plus - minus) / (2 * eps))
    return np.array(out)


@pytest.mark.parametrize("config", [dict(), dict(fpn=False), dict(roi_op="pool")], ids=["FPN", "no FPN", "RoIPool"])
@pytest.mark.parametrize("quantity", ["class score", "mask mean logit"])
def test_pixel_gradients_match_central_differences(quantity, config):
    model = float64_model(dict(SMALL, **config))
    core = _score_and_gradient if quantity == "class score" else _mask_mean_and_gradient
    pixels, label = square_image(), 2

    def run(p):
        with _scratch_state(model, training=True):
            return core(model, p, BOX, label)

    value, analytic = run(pixels)
    assert analytic.shape == (64, 64, 3)
    numeric = numeric_gradient(lambda p: float(run(p)[0]), pixels)
    got = np.array([analytic[i] for i in PIXELS])
    assert np.all(got != 0), f"{quantity}: zero gradient at some checked pixel: {got}"
    assert rel_error(got, numeric) < 1e-6, f"{quantity}: mine {got} vs numeric {numeric}"


def test_explain_finds_the_detection_and_leaves_the_model_as_found():
    model = float64_model()
    image = np.clip(square_image(), 0, 255).astype(np.uint8)
    # give the model gradients of its own (a training step half done) and its mode, both to be kept
    images = image[None]
    target = dict(boxes=np.array([[15.0, 18.0, 45.0, 42.0]]), labels=np.array([1]),
                  masks=np.zeros((1, 64, 64), bool))
    target["masks"][0, 18:42, 15:45] = True
    model.loss_and_backward(images, [target], np.random.default_rng(0))
    params = {k: v.copy() for k, v in model.parameters().items()}
    grads = {k: v.copy() for k, v in model.gradients().items()}
    model.eval()

    predicted = model.predict(images)[0]
    k = 1
    ex = explain_detection(model, image, k)

    assert all(not m.training and m._caches == [] for m in model.modules())
    assert model.parameters().keys() == params.keys()
    assert all(np.array_equal(model.parameters()[n], params[n]) for n in params)
    assert model.gradients().keys() == grads.keys()
    assert all(np.array_equal(model.gradients()[n], grads[n]) for n in grads)

    d = ex["detection"]
    assert np.array_equal(d["box"], predicted["boxes"][k]) and d["label"] == predicted["labels"][k]
    assert d["score"] == predicted["scores"][k] and np.array_equal(d["mask"], predicted["masks"][k])
    # the score recomputed from the proposal found is the detection's own: the right row of the box head
    assert abs(ex["score"] - d["score"]) < 1e-9, (ex["score"], d["score"])
    with _scratch_state(model, training=True):
        _, score_grad = _score_and_gradient(model, image.astype(np.float64), ex["proposal"], d["label"])
        mean, mask_grad = _mask_mean_and_gradient(model, image.astype(np.float64), d["box"], d["label"])
    np.testing.assert_allclose(ex["score_grad"], score_grad, rtol=1e-9, atol=0)
    np.testing.assert_allclose(ex["mask_grad"], mask_grad, rtol=1e-9, atol=0)
    assert abs(ex["mask_mean_logit"] - mean) < 1e-9
    np.testing.assert_array_equal(ex["score_saliency"], np.abs(score_grad).max(axis=2))
    np.testing.assert_array_equal(ex["mask_saliency"], np.abs(mask_grad).max(axis=2))
    x1, y1, x2, y2 = d["box"]
    ys, xs = np.mgrid[:64, :64] + 0.5
    inside = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
    mass = np.abs(score_grad).sum(axis=2)
    assert ex["share_inside_box"] == pytest.approx(mass[inside].sum() / mass.sum(), rel=1e-12)
    assert ex["box_area_share"] == pytest.approx(inside.mean(), rel=1e-12)


@pytest.mark.parametrize("k", [-1, 1000, 1.0, True, "0", None])
def test_a_bad_detection_index_is_one_line(k):
    model = float64_model()
    image = np.clip(square_image(), 0, 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"^k: expected a detection index in \[0, \d+\] \(\d+ detections\), got ") \
            as err:
        explain_detection(model, image, k)
    assert "\n" not in str(err.value)


def test_an_image_without_detections_says_so():
    model = float64_model(dict(SMALL, score_threshold=0.99))      # a fresh model's scores are near 1 / K
    image = np.clip(square_image(), 0, 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"^k: the model finds no detection in this image"):
        explain_detection(model, image, 0)


def test_a_bad_image_is_named():
    model = float64_model()
    with pytest.raises(ValueError, match=r"^image: expected one H x W x 3 image"):
        explain_detection(model, np.zeros((1, 64, 64, 3), np.uint8), 0)


def test_a_trained_model_looks_at_its_object(trained_run, tmp_path):
    model, class_names = load_model(trained_run / "model.npz")
    images = [s[0] for s in validation_set(4, seed=0, size=model.config.image_size)]
    explained = [explain_detection(model, image, 0) for image in images]
    # the score's gradient sits on the object: its share in the box is far above the box's share of the image
    ratios = [ex["share_inside_box"] / ex["box_area_share"] for ex in explained]
    assert all(ex["detection"]["score"] > 0.5 for ex in explained)
    assert min(ratios) > 1.5 and np.mean(ratios) > 2.5, ratios
    fig = explanation_figure(images[3], explained[3], class_names)
    assert len(fig.axes) == 5                   # three panels and two colour bars
    assert save(fig, tmp_path / "explain.png").stat().st_size > 10_000


def test_the_explanation_is_the_same_on_either_backend(xp, trained_run):
    image = validation_set(4, seed=0, size=128)[3][0]
    name = backend.name
    backend.use("numpy")
    try:
        want = explain_detection(load_model(trained_run / "model.npz")[0], image, 0)
    finally:
        backend.use(name)
    got = explain_detection(load_model(trained_run / "model.npz")[0], xp.asarray(image), 0)
    for key in ("score_grad", "mask_grad", "score_saliency", "mask_saliency", "proposal"):
        assert isinstance(got[key], np.ndarray), f"{key}: not moved to the host"
    assert got["detection"]["label"] == want["detection"]["label"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-4)
    for key in ("score_grad", "mask_grad"):
        scale = np.abs(want[key]).max()
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-3 * scale, err_msg=key)
