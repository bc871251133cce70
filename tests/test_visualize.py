"""visualize.py's stage-9 helpers: mask IoU, COCO's greedy matching, the failure outcomes and their figure.

The matching is checked three ways: on a hand-made image with one detection of each outcome, against a plain
loop over the detections (the rule as COCO writes it), and against pycocotools' own matcher (``COCOeval``'s
``dtMatches``) on random images.
"""
import contextlib
import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Rectangle
from matplotlib.colors import same_color
from pycocotools.cocoeval import COCOeval

from mrcnn_edu.boxes import box_iou
from mrcnn_edu.data.coco import coco_from_dict
from mrcnn_edu.ap import OUTCOMES, classify_detections, mask_iou
from mrcnn_edu.visualize import OUTCOME_COLOURS, draw_failures, failures_figure

TP, DUPLICATE, WRONG_CLASS, MISLOCALIZED, BACKGROUND = range(5)
NAMES = ("background", "square", "circle", "triangle")


def greedy_loop(iou, gt_labels, labels, scores, threshold):
    """The reference: COCO's matching written as the loop over score-sorted detections it is."""
    match = np.full(len(labels), -1)
    taken = np.zeros(len(gt_labels), bool)
    for j in np.argsort(-np.asarray(scores), kind="stable"):
        best = -1
        for g in range(len(gt_labels)):
            if (not taken[g] and gt_labels[g] == labels[j] and iou[j, g] >= threshold
                    and (best < 0 or iou[j, g] >= iou[j, best])):    # a tie goes to the later object
                best = g
        if best >= 0:
            taken[best] = True
            match[j] = best
    return match


def box_masks(boxes, size=(80, 140)):
    masks = np.zeros((len(boxes), *size), bool)
    for m, (x1, y1, x2, y2) in zip(masks, np.asarray(boxes, int)):
        m[y1:y2, x1:x2] = True
    return masks


# objects: a square, a circle, a triangle, a square nobody detects above score_min
GT_BOXES = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], float)
GT_LABELS = np.array([1, 2, 3, 1])
DET_BOXES = np.array([[0, 0, 10, 10],       # the square: true positive
                      [0, 0, 10, 8],        # the square again (IoU 0.8), lower score: duplicate
                      [20, 0, 30, 10],      # the circle, called a triangle: wrong class
                      [40, 0, 44, 10],      # the triangle, IoU 0.4: mislocalized
                      [100, 40, 110, 50],   # nothing there: background
                      [60, 0, 70, 10]],     # the last square, below score_min: left out
                     float)
DET_LABELS = np.array([1, 1, 3, 3, 2, 1])
DET_SCORES = np.array([0.9, 0.8, 0.7, 0.65, 0.6, 0.3])
EXPECTED = [TP, DUPLICATE, WRONG_CLASS, MISLOCALIZED, BACKGROUND, -1]


def test_mask_iou_counts_pixels():
    a = np.zeros((2, 4, 4), bool)
    a[0, 0, :4] = True                     # 4 pixels
    b = np.zeros((1, 4, 4), bool)
    b[0, 0, 2:4] = b[0, 1, :4] = True      # 6 pixels, 2 of them shared with a[0]
    np.testing.assert_allclose(mask_iou(a, b), [[2 / 8], [0.0]], err_msg="mask IoU: expected vs got")
    np.testing.assert_allclose(mask_iou(b, b), [[1.0]])
    assert mask_iou(a[:0], b).shape == (0, 1)
    with pytest.raises(ValueError, match="masks2"):
        mask_iou(a, np.zeros((1, 4, 5), bool))
    with pytest.raises(ValueError, match="masks1"):
        mask_iou(a[0], b)


def test_one_detection_of_each_outcome():
    result = classify_detections(box_iou(DET_BOXES, GT_BOXES), GT_LABELS, DET_LABELS, DET_SCORES)
    assert result["outcome"].tolist() == EXPECTED, [OUTCOMES[o] if o >= 0 else "left out" for o in result["outcome"]]
    assert result["gt_index"].tolist() == [0, -1, -1, -1, -1, -1]
    assert result["missed"].tolist() == [False, True, True, True]
    # with score_min 0 the last detection finds the last square; a looser threshold accepts the 0.4 overlap
    result = classify_detections(box_iou(DET_BOXES, GT_BOXES), GT_LABELS, DET_LABELS, DET_SCORES, score_min=0.0)
    assert result["outcome"][5] == TP and result["gt_index"][5] == 3 and result["missed"].tolist() == [0, 1, 1, 0]
    result = classify_detections(box_iou(DET_BOXES, GT_BOXES), GT_LABELS, DET_LABELS, DET_SCORES, iou_threshold=0.3)
    assert result["outcome"][3] == TP and result["gt_index"][3] == 2


def test_greedy_by_score_not_the_best_assignment():
    # A (score 0.9) overlaps objects 0 and 1; B (0.8) only object 0 well enough. The best assignment would
    # give A object 1 and B object 0; COCO's greedy rule gives A its best, object 0, and B nothing.
    iou = np.array([[0.7, 0.3],     # B, listed first: the order of the arrays must not matter
                    [0.8, 0.6]])    # A
    result = classify_detections(iou, [1, 1], [1, 1], [0.8, 0.9])
    assert result["outcome"].tolist() == [DUPLICATE, TP]
    assert result["gt_index"].tolist() == [-1, 0]
    assert result["missed"].tolist() == [False, True]


def test_a_long_chain_of_decisions():
    # detection j prefers object j - 1 (taken by detection j - 1), so it takes object j: every decision
    # depends on the one before, and the fixed-point iteration needs one pass per detection
    n = 30
    iou = np.zeros((n, n))
    iou[np.arange(n), np.arange(n)] = 0.6
    iou[np.arange(1, n), np.arange(n - 1)] = 0.9
    scores = np.linspace(1.0, 0.5, n)
    result = classify_detections(iou, np.ones(n, int), np.ones(n, int), scores)
    assert result["gt_index"].tolist() == list(range(n))
    assert not result["missed"].any()


@pytest.mark.parametrize("seed", range(20))
def test_matches_the_loop_on_random_overlaps(seed):
    gen = np.random.default_rng(seed)
    d, g = gen.integers(0, 12), gen.integers(0, 9)
    iou = (gen.random((d, g)) * (gen.random((d, g)) < 0.5)).round(1)    # ties in the IoU too
    gt_labels, labels = gen.integers(1, 3, g), gen.integers(1, 3, d)
    scores = gen.random(d).round(1)          # ties in the score: the earlier detection goes first
    result = classify_detections(iou, gt_labels, labels, scores, iou_threshold=0.5, score_min=0.0)
    expected = greedy_loop(iou, gt_labels, labels, scores, 0.5)
    assert result["gt_index"].tolist() == expected.tolist()
    assert ((result["outcome"] == TP) == (expected >= 0)).all()
    missed = np.ones(g, bool)
    missed[expected[expected >= 0]] = False
    assert result["missed"].tolist() == missed.tolist()


def coco_matches(gt_boxes, gt_labels, boxes, labels, scores, threshold):
    """pycocotools' matching of one image at one IoU threshold: the 0-based object each detection took, or -1."""
    xywh = lambda b: [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]  # noqa: E731
    gt = coco_from_dict({"images": [{"id": 1, "width": 200, "height": 200}],
                         "annotations": [{"id": i + 1, "image_id": 1, "category_id": int(c), "bbox": xywh(b),
                                          "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
                                         for i, (b, c) in enumerate(zip(gt_boxes, gt_labels))],
                         "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([{"image_id": 1, "category_id": int(c), "bbox": xywh(b), "score": float(s)}
                         for b, c, s in zip(boxes, labels, scores)])
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.iouThrs = np.array([threshold])
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluator.params.maxDets = [100]
        evaluator.evaluate()
    match = np.full(len(boxes), -1)
    for e in evaluator.evalImgs:
        if e is not None:
            for dt_id, gt_id in zip(e["dtIds"], e["dtMatches"][0]):
                match[dt_id - 1] = int(gt_id) - 1      # ids are 1-based in list order; 0 means unmatched
    return match


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_pycocotools(seed):
    gen = np.random.default_rng(100 + seed)
    g = gen.integers(1, 8)
    xy = gen.uniform(0, 150, (g, 2))
    gt_boxes = np.concatenate([xy, xy + gen.uniform(10, 40, (g, 2))], axis=1)
    # detections: jittered copies of the objects (some twice, some with the other class) and random boxes
    copies = gt_boxes[gen.integers(0, g, 2 * g)] + gen.normal(0, 4, (2 * g, 4))
    xy = gen.uniform(0, 150, (3, 2))
    boxes = np.concatenate([copies, np.concatenate([xy, xy + 20], axis=1)])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    gt_labels, labels, scores = gen.integers(1, 3, g), gen.integers(1, 3, len(boxes)), gen.random(len(boxes))
    for threshold in (0.5, 0.75):
        ours = classify_detections(box_iou(boxes, gt_boxes), gt_labels, labels, scores, threshold, score_min=0.0)
        theirs = coco_matches(gt_boxes, gt_labels, boxes, labels, scores, threshold)
        assert ours["gt_index"].tolist() == theirs.tolist(), f"seed {seed}, IoU {threshold}: ours vs pycocotools"


def test_empty_images():
    result = classify_detections(np.zeros((0, 2)), [1, 2], [], [])
    assert result["outcome"].shape == (0,) and result["missed"].tolist() == [True, True]
    result = classify_detections(np.zeros((2, 0)), [], [1, 2], [0.9, 0.7])
    assert result["outcome"].tolist() == [BACKGROUND, BACKGROUND] and result["missed"].shape == (0,)


def test_bad_inputs_name_the_argument():
    iou = box_iou(DET_BOXES, GT_BOXES)
    with pytest.raises(ValueError, match="iou"):
        classify_detections(iou[:, :3], GT_LABELS, DET_LABELS, DET_SCORES)
    with pytest.raises(ValueError, match="scores"):
        classify_detections(iou, GT_LABELS, DET_LABELS, DET_SCORES[:4])
    with pytest.raises(ValueError, match="scores"):
        classify_detections(iou, GT_LABELS, DET_LABELS, np.where(DET_SCORES > 0.8, np.nan, DET_SCORES))
    with pytest.raises(TypeError, match="gt_labels"):
        classify_detections(iou, GT_LABELS.astype(float), DET_LABELS, DET_SCORES)
    with pytest.raises(ValueError, match="iou_threshold"):
        classify_detections(iou, GT_LABELS, DET_LABELS, DET_SCORES, iou_threshold=0.0)
    with pytest.raises(ValueError, match="iou_type"):
        draw_failures(plt.figure().add_subplot(), np.zeros((80, 140, 3), np.uint8),
                      dict(boxes=GT_BOXES, labels=GT_LABELS, masks=box_masks(GT_BOXES)),
                      dict(boxes=DET_BOXES, labels=DET_LABELS, scores=DET_SCORES, masks=box_masks(DET_BOXES)),
                      NAMES, iou_type="segm")
    plt.close("all")


def _edge_counts(ax):
    """How many rectangles the axes holds in each outcome colour."""
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    return [sum(same_color(r.get_edgecolor()[:3], c) for r in rects) for c in OUTCOME_COLOURS]


@pytest.mark.parametrize("iou_type", ["box", "mask"])
def test_the_failure_figure_colours_each_outcome(iou_type):
    image = np.full((80, 140, 3), 200, np.uint8)
    gt = dict(boxes=GT_BOXES, labels=GT_LABELS, masks=box_masks(GT_BOXES))
    det = dict(boxes=DET_BOXES, labels=DET_LABELS, scores=DET_SCORES, masks=box_masks(DET_BOXES))
    fig = failures_figure([image, image], [gt, gt], [det, {k: v[:0] for k, v in det.items()}], NAMES,
                          iou_type=iou_type, columns=3)
    axes = fig.axes
    assert len(axes) == 3 and not axes[2].axison                      # a grid of 3, the last one empty
    assert _edge_counts(axes[0]) == [1, 1, 1, 1, 1]                   # one box per outcome, none for the left-out
    assert axes[0].get_title() == "1 right, 4 wrong, 3 missed"
    assert axes[1].get_title() == "0 right, 0 wrong, 4 missed" and _edge_counts(axes[1]) == [0] * 5
    texts = [t.get_text() for t in axes[0].texts]
    assert "triangle 0.70 (is circle)" in texts and "missed square" in texts and "missed circle" in texts
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == list(OUTCOMES) + ["missed object"]
    plt.close(fig)
    with pytest.raises(ValueError, match="detections"):
        failures_figure([image, image], [gt, gt], [det], NAMES)


def test_a_tie_goes_to_the_later_object_as_in_pycocotools():
    gt_boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10]], float)
    boxes = np.array([[2, 0, 12, 10]], float)                  # IoU 8/12 with both objects
    ours = classify_detections(box_iou(boxes, gt_boxes), [1, 1], [1], [0.9])
    assert ours["gt_index"].tolist() == [1] == coco_matches(gt_boxes, [1, 1], boxes, [1], [0.9], 0.5).tolist()


# ----------------------------------------------------------------------------------------------------------
# the stage figures a student reads: conventions in the titles, colour bars, text that reads on its colour
# ----------------------------------------------------------------------------------------------------------

def _titles(fig):
    return " ".join([fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes])


def _colour_bar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_text_colour_reads_on_its_background():
    from mrcnn_edu.visualize import text_colour
    for light in ("#fde725", "w", "yellow", plt.cm.magma(1.0), plt.cm.viridis(0.9), "tab:cyan"):
        assert text_colour(light) == "k", light                # white on yellow is what the demo had
    for dark in ("#440154", "k", plt.cm.magma(0.1), plt.cm.viridis(0.0), "tab:blue", "tab:red"):
        assert text_colour(dark) == "w", dark


def test_box_labels_sit_inside_their_box_on_a_patch_of_its_colour():
    from mrcnn_edu.visualize import draw_boxes, text_colour
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((50, 80, 3)))
    draw_boxes(ax, np.array([[10.0, 20.0, 40.0, 45.0]]), "tab:orange", labels=["circle 0.93"])
    [text] = ax.texts
    assert text.get_text() == "circle 0.93" and text.get_position() == (10.0, 20.0)
    assert text.get_va() == "top" and text.get_ha() == "left" and text.get_clip_on()  # inside, never spilling out
    assert same_color(text.get_bbox_patch().get_facecolor()[:3], "tab:orange")
    assert text.get_color() == text_colour("tab:orange")
    plt.close(fig)


def test_write_values_picks_black_on_light_cells_and_white_on_dark():
    from mrcnn_edu.visualize import write_values
    fig, ax = plt.subplots()
    values = np.array([[0.0, 1.0], [0.25, 0.97]])
    write_values(ax, values, ax.imshow(values, cmap="viridis", vmin=0, vmax=1), skip_zeros=True)
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours == {"1.00": "k", "0.25": "w", "0.97": "k"}       # the zero left out
    plt.close(fig)


def test_the_roi_figure_states_its_conventions_has_a_colour_bar_and_readable_values():
    from mrcnn_edu.data import lecture_feature_map
    from mrcnn_edu.visualize import roi_figure
    fmap = lecture_feature_map()
    pool = np.array([[0.85, 0.84], [0.97, 0.96]])
    align = np.array([[0.477, 0.471], [0.457, 0.455]])
    fig = roi_figure(fmap, (0, 3, 6, 7), pool, align, np.array([[0.375, 3.125], [2.125, 3.125]]),
                     bins="slides", aligned=True, sampling_ratio=2)
    titles = _titles(fig)
    assert "bins='slides'" in titles and "aligned=True" in titles and "sampling_ratio=2" in titles
    assert _colour_bar_labels(fig) == ["feature value"]
    pooled_texts = {t.get_text(): t.get_color() for t in fig.axes[1].texts}
    assert pooled_texts == {"0.85": "k", "0.84": "k", "0.97": "k", "0.96": "k"}   # black on yellow-green
    assert len(fig.axes[0].texts) == 64                                              # the map's values
    plt.close(fig)
    fig = roi_figure(fmap, (0, 3, 6, 7), pool, align, np.zeros((0, 2)), bins="caffe", aligned=False)
    assert "bins='caffe'" in _titles(fig) and "aligned=False" in _titles(fig)
    plt.close(fig)


def test_the_nms_figure_states_its_threshold_and_keeps_labels_off_the_boxes():
    from mrcnn_edu.visualize import nms_figure
    boxes = np.array([[10, 10, 50, 50], [12, 11, 52, 49], [60, 60, 90, 95]], float)
    scores = np.array([0.9, 0.8, 0.7])
    fig = nms_figure((100, 100), boxes, scores, np.array([0, 2]), iou_threshold=0.6)
    assert "IoU > 0.6" in _titles(fig) and _colour_bar_labels(fig) == ["score"]
    right = fig.axes[1]
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["score 0.90", "score 0.70"]
    assert not right.texts
    plt.close(fig)


def test_the_other_stage_figures_state_their_conventions():
    from mrcnn_edu.anchors import generate_anchors
    from mrcnn_edu.visualize import anchors_figure, iou_figure, rpn_labels_figure, smooth_l1_figure
    anchors = generate_anchors((64, 96), 16, (16, 32), (1.0,))
    fig = anchors_figure(anchors, (64, 96), 16, 2)
    assert "cell corners (16 j, 16 i)" in _titles(fig)
    plt.close(fig)
    fig = anchors_figure(generate_anchors((64, 96), 16, (16, 32), (1.0,), offset=0.5), (64, 96), 16, 2)
    assert "(16 j + 8, 16 i + 8)" in _titles(fig)
    plt.close(fig)
    fig = iou_figure(np.array([0.0, 0, 10, 10]), np.array([5.0, 5, 15, 15]), 25 / 175)
    assert "width x2 - x1" in _titles(fig) and "0.143" in _titles(fig)
    plt.close(fig)
    labels = np.full(len(anchors), -1)
    labels[:3], labels[3:9] = 1, 0
    fig = rpn_labels_figure((64, 96), np.array([[10.0, 10, 40, 40]]), anchors, labels)
    assert "IoU >= 0.7" in _titles(fig) and "IoU < 0.3" in _titles(fig)
    assert len(fig.axes[0].get_legend().get_texts()) == 3
    plt.close(fig)
    x = np.linspace(-3, 3, 61)
    fig = smooth_l1_figure(x, np.where(np.abs(x) < 1, 0.5 * x ** 2, np.abs(x) - 0.5), np.clip(x, -1, 1), beta=1.0)
    assert "beta = 1" in _titles(fig)
    plt.close(fig)


def test_predictions_figure_has_a_title_and_ground_truth_can_go_without_scores():
    from mrcnn_edu.visualize import draw_instances, predictions_figure
    image = np.full((40, 60, 3), 90, np.uint8)
    det = dict(boxes=np.array([[5.0, 5, 30, 30]]), scores=np.array([0.93]), labels=np.array([2]),
               masks=box_masks([[5, 5, 30, 30]], (40, 60)))
    fig = predictions_figure([image], [det], NAMES)
    assert "score >= 0.5" in fig._suptitle.get_text()
    assert [t.get_text() for t in fig.axes[0].texts] == ["circle 0.93"]
    plt.close(fig)
    fig, ax = plt.subplots()
    draw_instances(ax, image, det, NAMES, show_scores=False)
    assert [t.get_text() for t in ax.texts] == ["circle"]
    plt.close(fig)
