"""The capstone (``mrcnn-edu lessons capstone``): Mask R-CNN trained on the student's lesson functions.

Working copies that re-export the reference solutions must give the reference run to the digit; a planted
mistake must be named (the run stops at it, or the table says where it first differed) and move the result.
Every run here is a few steps of a small model in temporary folders (never ``runs/``); the reference of those
settings is trained once for the module and cached.
"""
import ast
import inspect
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from mrcnn_edu import capstone
from mrcnn_edu.capstone import ENTRIES, CapstoneError, StudentCodeError, is_stub, plan, run_capstone, substituted
from mrcnn_edu.model import ModelConfig

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
SMALL = ModelConfig(image_size=64, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(48.0, 64.0),
                    box_hidden=32, mask_channels=8, mask_convs=1, roi_batch=16)
QUICK = dict(batch_size=2, val_images=8)
STEPS = 4
LINE = re.compile(r"^capstone: box AP (\d\.\d{3}) mask AP (\d\.\d{3}) \(reference: box AP (\d\.\d{3}) mask AP "
                  r"(\d\.\d{3}), same steps and seed\)$")


def make_lessons(root, working_copies="reference", extra=None):
    """A lessons folder like the clone's: each lesson's stubs, and a working copy that re-exports the reference
    (``"reference"``), is the stub (``"stub"``) or is absent (``None``); ``extra`` maps a lesson to code appended
    to its working copy (a planted mistake overrides the re-exported function)."""
    lessons = Path(root) / "lessons"
    lessons.mkdir(parents=True)
    (lessons / "conftest.py").write_text("")
    for folder in sorted(LESSONS.glob("[0-9][0-9]_*")):
        (lessons / folder.name).mkdir()
        shutil.copy(folder / "exercise.py", lessons / folder.name / "exercise.py")
        source = {"reference": "reference.py", "stub": "exercise.py"}.get(working_copies)
        if source:
            text = (folder / source).read_text() + "\n\n" + (extra or {}).get(folder.name, "")
            (lessons / folder.name / "exercise_work.py").write_text(text)
    return lessons


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One reference cache for the module: the library's run of these settings is trained once."""
    return tmp_path_factory.mktemp("capstone-cache")


def capstone_run(tmp_path, cache, extra=None, **changes):
    lessons = make_lessons(tmp_path, extra=extra)
    lines = []
    result = run_capstone(STEPS, 0, lessons, tmp_path / "out", model_config=SMALL, train_changes=QUICK,
                          cache_dir=cache, progress=False, say=lines.append, **changes)
    return result, lines


# ---------------------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------------------

def lesson_tasks():
    """``(lesson, function)`` of every task the lesson tests grade (their ``TASKS`` dicts)."""
    found = set()
    for test_file in LESSONS.glob("[0-9][0-9]_*/test_*.py"):
        for node in ast.parse(test_file.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TASKS" for t in node.targets):
                found |= {(test_file.parent.name, name) for name in ast.literal_eval(node.value).values()}
    return found


def test_every_lesson_task_has_a_row_in_the_table():
    assert {(e.lesson, e.function) for e in ENTRIES} == lesson_tasks()


def test_the_docstring_shows_the_table_the_code_uses():
    assert capstone.mapping_table() in capstone.__doc__


# a core's parameter that is handed on under the public function's name
RENAMED = {("_fast_rcnn_loss", "box_deltas"): "box_regression", ("_mask_targets", "size"): "m"}
# the cores whose arguments an adapter re-lays (capstone._im2col_adapter, _col2im_adapter)
ADAPTED = {"_windows": ["x", "kernel_size", "stride", "padding"],
           "_unwindows": ["cols", "x_shape", "kernel_size", "stride", "padding"]}


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.targets], ids=lambda e: e.function)
def test_every_replaced_library_object_exists_and_takes_the_public_arguments(entry):
    stub = getattr(capstone._load(LESSONS / entry.lesson / "exercise.py", f"stub_{entry.lesson}"), entry.function)
    public = list(inspect.signature(stub).parameters)
    for dotted, _ in entry.targets:
        target = capstone._resolve(dotted)    # raises CapstoneError when a library name is gone
        name = dotted.rpartition(".")[2]
        params = list(inspect.signature(target).parameters)
        if name == entry.function:            # the public function itself: the stub mirrors it
            assert params == public, f"{dotted}{params} against the stub's {public}"
        elif name in ADAPTED:
            assert params == ADAPTED[name], f"{dotted}{params}: the adapter expects {ADAPTED[name]}"
        else:                                 # a core: called positionally with the public order
            assert name == "_" + entry.function, dotted
            renamed = [RENAMED.get((name, p), p) for p in params]
            assert renamed == public[:len(params)], f"{dotted}{params} against the stub's {public}"


def test_is_stub_reads_the_source_without_calling(tmp_path):
    for folder in sorted(LESSONS.glob("[0-9][0-9]_*")):
        stubs = capstone._load(folder / "exercise.py", f"stub_{folder.name}")
        for entry in (e for e in ENTRIES if e.lesson == folder.name):
            assert is_stub(getattr(stubs, entry.function)), f"{folder.name} {entry.function}"
    from mrcnn_edu import boxes
    assert not is_stub(boxes.box_iou)
    (tmp_path / "copy.py").write_text('def bare(x):\n    """doc"""\n    pass\n    raise NotImplementedError\n\n\n'
                                      "def half_done(x):\n    y = x + 1\n    raise NotImplementedError('the rest')\n")
    module = capstone._load(tmp_path / "copy.py", "is_stub_case")
    assert is_stub(module.bare)
    assert not is_stub(module.half_done)   # the student's code: it runs, and stops the run named if it raises
    assert not is_stub(len)                # no source to read: counts as written


def test_plan_says_what_is_whose(tmp_path):
    lessons = make_lessons(tmp_path, working_copies="stub")
    (lessons / "02_anchors" / "exercise_work.py").unlink()
    (lessons / "01_iou" / "exercise_work.py").write_text(
        (LESSONS / "01_iou" / "exercise.py").read_text()
        + "\n\ndef box_iou(boxes1, boxes2):\n    return np.zeros((len(boxes1), len(boxes2)))\n")
    with open(lessons / "06_layers" / "exercise_work.py", "a") as f:   # a backward without its forward
        f.write("\n\ndef conv2d_backward(dout, cache, need_dx=True):\n    return None, None, None\n")
    rows, _ = plan(lessons, SMALL)
    status = {r.entry.function: r.status for r in rows}
    assert status["box_iou"] == "yours" and status["nms"] == "library (not written)"
    assert status["generate_anchors"] == "library (no copy)"
    assert status["conv2d_backward"] == "yours, unused" and status["conv2d"] == "library (not written)"
    table = capstone.format_plan(rows, SMALL)
    assert "not used: it reads the cache of your conv2d" in table and "yours: 1 of" in table
    assert "no working copy of 02_anchors" in table
    assert "needs roi_op='pool', this model has 'align'" in table

    (lessons / "03_rpn" / "exercise_work.py").write_text("def rpn_targets(:\n")
    with pytest.raises(CapstoneError, match=r"lessons/03_rpn/exercise_work.py does not import \(SyntaxError"):
        plan(lessons, SMALL)


def test_the_substitution_is_undone_even_after_an_error(tmp_path):
    def snapshot():
        return {(name, attr): id(value) for name, module in list(sys.modules.items())
                if name.startswith("mrcnn_edu") and module is not None for attr, value in vars(module).items()}

    import mrcnn_edu.model as model
    import mrcnn_edu.rpn as rpn
    rows, modules = plan(make_lessons(tmp_path), SMALL)
    before, original, batched = snapshot(), rpn._rpn_loss, rpn._rpn_targets_batch
    with pytest.raises(KeyError):
        with substituted(rows, modules) as sub:
            assert len(sub.stages) == len(ENTRIES)    # every function "yours" (re-exports of the reference)
            assert model._rpn_loss is rpn._rpn_loss is not original
            assert model._rpn_loss.__wrapped__ is original
            assert model._rpn_targets_batch is rpn._rpn_targets_each is not batched              # the loop
            assert rpn._rpn_targets_batch is batched                   # only the model's calls change
            raise KeyError("boom")
    assert snapshot() == before and model._rpn_loss is original and model._rpn_targets_batch is batched


PERMUTATION_SAMPLER = '''
def sample_balanced(labels, rng, batch_size=256, positive_fraction=0.5):
    """Right counts, drawn with permutations instead of the library's keys: allowed."""
    import numpy as np
    labels = np.asarray(labels)
    pos_idx, neg_idx = np.flatnonzero(labels >= 1), np.flatnonzero(labels == 0)
    num_pos = min(int(batch_size * positive_fraction), len(pos_idx))
    num_neg = min(batch_size - num_pos, len(neg_idx))
    pos, neg = np.zeros(len(labels), bool), np.zeros(len(labels), bool)
    pos[rng.permutation(pos_idx)[:num_pos]] = True
    neg[rng.permutation(neg_idx)[:num_neg]] = True
    return pos, neg
'''


@pytest.mark.parametrize("batch_size, allowed", [("batch_size", True), ("2 * batch_size", False)])
def test_other_draws_are_allowed_other_counts_are_not(tmp_path, batch_size, allowed):
    sampler = PERMUTATION_SAMPLER.replace("num_neg = min(batch_size", f"num_neg = min({batch_size}")
    rows, modules = plan(make_lessons(tmp_path, extra={"03_rpn": sampler}), SMALL)
    with substituted([r for r in rows if r.entry.function == "sample_balanced"], modules) as sub:
        from mrcnn_edu import matching
        labels = np.array([1.0] * 10 + [0.0] * 500 + [-1.0] * 20)
        pos, neg = matching._sample_balanced(labels, np.random.default_rng(0), 256, 0.5)
    stage = sub.stages["sample_balanced"]
    assert (stage.calls, stage.differ, stage.other_draws) == (1, 1, int(allowed))
    assert pos.sum() == 10 and neg.sum() == (246 if allowed else 500)   # the model got the student's masks
    assert allowed or "counts (10, 500) where the library's are (10, 246)" in stage.first


def test_steps_must_be_positive():
    with pytest.raises(CapstoneError, match="--steps: expected an int >= 1, got 0"):
        capstone.cmd_capstone(0)


# ---------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------

def test_reference_copies_train_the_reference_model(tmp_path, cache):
    result, lines = capstone_run(tmp_path, cache)
    yours, reference = result["yours"], result["reference"]
    assert yours == reference                      # AP and final loss, to the last digit
    stages = result["stages"]
    assert all(s.differ == 0 for s in stages.values())
    assert all(s.calls > 0 for name, s in stages.items()
               if name not in ("bilinear_interpolate", "roi_pool", "roi_pool_backward", "softmax_mask_loss"))
    assert result["by_hand"]["box_AP"] == pytest.approx(yours["box_AP"], abs=1e-9)   # lesson 09 = pycocotools
    assert result["by_hand"]["mask_AP"] == pytest.approx(yours["mask_AP"], abs=1e-9)
    assert result["verdict"].startswith("verdict: every function of yours gave the library's numbers")
    assert LINE.match(lines[-1]) and lines[-1] == result["line"]
    x, y, x0, y0 = LINE.match(lines[-1]).groups()
    assert (x, y) == (x0, y0)
    assert (tmp_path / "out" / "yours" / "model.npz").exists()
    assert any("your functions at work" in line for line in lines)


def test_box_iou_with_plus_one_widths_is_named_and_moves_the_run(tmp_path, cache):
    plus_one = '''
def box_iou(boxes1, boxes2):
    """The old +1 pixel widths: a planted mistake."""
    import numpy as np
    b1, b2 = np.asarray(boxes1), np.asarray(boxes2)
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    w = np.clip(np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0]) + 1, 0, None)
    h = np.clip(np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1]) + 1, 0, None)
    return w * h / (area1[:, None] + area2[None, :] - w * h)
'''
    result, lines = capstone_run(tmp_path, cache, extra={"01_iou": plus_one})
    stages = result["stages"]
    assert stages["box_iou"].differ > 0 and stages["box_area"].differ == 0 and stages["smooth_l1_loss"].differ == 0
    assert result["verdict"].startswith("verdict: your box_iou (lesson 01_iou) is the first")
    assert "mrcnn-edu lessons check 01" in result["verdict"]
    assert result["yours"]["loss"] != result["reference"]["loss"]
    # the AP by hand used the student's box_iou too, so its box AP is no longer pycocotools'
    assert result["by_hand"]["mask_AP"] == pytest.approx(result["yours"]["mask_AP"], abs=1e-9)
    assert LINE.match(lines[-1])


def test_roi_align_ignoring_aligned_and_an_unflipped_conv_backward_are_named(tmp_path, cache):
    mistakes = {"04_roi": '''
def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """``aligned`` ignored: a planted mistake."""
    from mrcnn_edu.roi import roi_align as library
    return library(features, rois, output_size, spatial_scale, sampling_ratio, False)
''', "06_layers": '''
def conv2d_backward(dout, cache, need_dx=True):
    """dx rotated by 180 degrees, as without the flipped kernel: a planted mistake."""
    from mrcnn_edu.nn.functional import conv2d_backward as library
    dx, dw, db = library(dout, cache, need_dx)
    return (None if dx is None else dx[..., ::-1, ::-1]), dw, db
'''}
    result, _ = capstone_run(tmp_path, cache, extra=mistakes)
    stages = result["stages"]
    assert stages["roi_align"].differ > 0 and stages["conv2d_backward"].differ > 0
    assert stages["conv2d"].differ == 0 and stages["linear_backward"].differ == 0
    assert re.search(r"your (roi_align|conv2d_backward) \(lesson 0[46]_\w+\) is the first", result["verdict"])
    assert result["yours"]["loss"] != result["reference"]["loss"]


def test_a_result_of_the_wrong_shape_stops_the_run_naming_the_function(tmp_path, cache, capsys):
    transposed = '''
def box_iou(boxes1, boxes2):
    from mrcnn_edu.boxes import box_iou as library
    return library(boxes1, boxes2).T
'''
    lessons = make_lessons(tmp_path, extra={"01_iou": transposed})
    status = capstone.cmd_capstone(STEPS, 0, lessons, tmp_path / "out", model_config=SMALL, train_changes=QUICK,
                                   cache_dir=cache, progress=False)
    assert status == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("capstone: stopped: lesson 01_iou box_iou (yours) returned shape (")
    assert "where the library returns" in last and "at training step 1" in last


def test_an_exception_names_the_lesson_function_and_line(tmp_path, cache):
    raising = '''
def rpn_targets(anchors, gt_boxes, rng, batch_size_per_image=256, positive_fraction=0.5, high=0.7, low=0.3):
    return anchors[:, 4], anchors   # IndexError: anchors have 4 columns
'''
    with pytest.raises(StudentCodeError) as stop:
        capstone_run(tmp_path, cache, extra={"03_rpn": raising})
    message = str(stop.value)
    assert message.startswith("lesson 03_rpn rpn_targets (yours) raised IndexError")
    assert re.search(r"lessons/03_rpn/exercise_work.py, line \d+, in rpn_targets", message)
    assert "mrcnn-edu lessons check 03" in message


def test_a_wrong_postprocess_lowers_ap(tmp_path, cache):
    swapped = '''
def postprocess_detections(class_logits, box_deltas, proposals, image_size, score_threshold=0.05,
                           nms_threshold=0.5, detections_per_image=100, weights=BOX_WEIGHTS):
    """Keeps the scores BELOW the threshold: a comparison turned round, planted."""
    from mrcnn_edu.postprocess import postprocess_detections as library
    return library(-class_logits, box_deltas, proposals, image_size, score_threshold, nms_threshold,
                   detections_per_image, weights)
'''
    result, _ = capstone_run(tmp_path, cache, extra={"08_train": swapped})
    yours, reference = result["yours"], result["reference"]
    assert reference["box_AP"] > 0                 # the premise: the reference finds something in 4 steps
    assert yours["box_AP"] < reference["box_AP"] and yours["loss"] == reference["loss"]   # inference only
    assert result["stages"]["postprocess_detections"].differ > 0


def test_a_sampler_with_other_draws_is_allowed(tmp_path, cache):
    result, _ = capstone_run(tmp_path, cache, extra={"03_rpn": PERMUTATION_SAMPLER})
    sampler = result["stages"]["sample_balanced"]
    assert sampler.differ > 0 and sampler.other_draws == sampler.differ
    assert "draw other random numbers than the library's (allowed)" in result["verdict"]
    assert "sample_balanced" in result["verdict"]


def test_the_reference_is_cached(tmp_path, cache):
    lessons = make_lessons(tmp_path, working_copies=None)   # nothing of the student's: the reference alone
    for _ in range(2):   # the second time at the latest (the first, after the other tests) it is read back
        lines = []
        result = run_capstone(STEPS, 0, lessons, tmp_path / "out", model_config=SMALL, train_changes=QUICK,
                              cache_dir=cache, progress=False, say=lines.append)
    assert any(line.startswith("reference: the library's run of the same steps and seed, from") for line in lines)
    assert len(list(Path(cache).glob("reference-*.json"))) == 1
    assert result["yours"] == result["reference"] and not result["stages"]
    assert "nothing of yours is written yet" in "\n".join(lines)
    x, y, x0, y0 = LINE.match(lines[-1]).groups()
    assert (x, y) == (x0, y0) and np.isfinite(float(x))
