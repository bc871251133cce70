"""``benchmarks/count_ops.py``: the counter of array operations and host round trips that issue 16's
before/after numbers come from must count what it claims, charge it to the right module, and change nothing."""
import sys
from pathlib import Path

import numpy as np
import pytest

from mrcnn_edu import backend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
count_ops = pytest.importorskip("count_ops")


class _Tiny:
    """Just enough of a model for ``counting``: one module holding one parameter."""

    def __init__(self, p):
        self.params = {"w": p}

    def modules(self):
        return [self]


def _run(fn, p, by_function=False):
    holder = _Tiny(p)
    steps = [None]
    ops, trips, names, syncs = count_ops.count_steps(holder, None, steps, lambda m, o, b, i: fn(m.params["w"]),
                                                     warmup=0, by_function=by_function)
    _run.syncs = syncs
    return ops, trips, names


def test_operators_functions_reductions_and_round_trips_are_counted_once_each():
    backend.use("numpy")

    def work(w):
        xp = backend.xp
        y = xp.exp(w) + 1.0          # a function and an operator: 2
        z = y[xp.asarray([0, 2])]    # asarray and a fancy index: 2
        v = y[1:]                    # a view: 0
        total = (z * 2).sum()        # an operator and a reduction: 2
        return float(total) + float(v.max())   # a reduction: 1; two round trips

    ops, trips, names = _run(work, np.arange(4.0))
    assert sum(ops.values()) == 7 and sum(trips.values()) == 2
    assert names[("other", "exp")] == 1 and names[("other", "__getitem__")] == 1


def test_what_returns_a_device_array_itself_is_not_counted_and_a_transfer_is():
    """CuPy's ``asarray`` / ``ascontiguousarray`` of a device array already of that kind, and ``astype(dtype,
    copy=False)`` to its own dtype, return the array itself: no kernel. A conversion, a copy, or a host array
    sent to the device counts."""
    backend.use("numpy")

    def work(w):
        xp = backend.xp
        xp.asarray(w)                        # itself: 0
        xp.ascontiguousarray(w)              # itself: 0
        w.astype(w.dtype, copy=False)        # itself: 0
        xp.asarray(w, dtype=xp.float32)      # a conversion: 1
        w.astype(xp.float32)                 # a conversion: 1
        xp.ascontiguousarray(w.T)            # a copy: 1
        xp.asarray(np.ones(3))               # a host array to the device: 1

    ops, _, names = _run(work, np.ones((2, 3)))
    assert sum(ops.values()) == 4
    assert names[("other", "asarray")] == 2 and names[("other", "astype")] == 1


def test_views_and_allocations_are_not_counted_a_mean_counts_once():
    backend.use("numpy")

    def work(w):
        xp = backend.xp
        xp.split(w, [1])                     # views: 0
        xp.broadcast_to(w, (4, 2, 3))        # a view: 0
        xp.empty((5,))                       # an allocation: 0
        w.mean(axis=1)                       # one reduction: 1
        xp.reshape(w.T, -1)                  # NumPy copies (not contiguous): 1
        xp.zeros(3)                          # a fill: 1
        w.reshape(3, 2).ravel()              # views of a contiguous array: 0
        w.T.reshape(6)                       # the method copies too: 1
        xp.broadcast_to(w[:, None], (2, 2, 3)).reshape(4, 3)   # a broadcast view laid out anew: 1

    ops, _, names = _run(work, np.ones((2, 3)))
    assert sum(ops.values()) == 5
    assert names[("other", "mean")] == 1 and names[("other", "reshape")] == 3


def test_results_sized_by_the_data_are_size_syncs():
    backend.use("numpy")

    def work(w):
        xp = backend.xp
        mask = w > 1                         # an op, no sync
        xp.nonzero(mask)                     # an op and a sync
        w[mask]                              # a boolean index: an op and a sync
        w[xp.asarray([0, 1])]                # an integer index: an op (and the asarray)
        w[mask] = 0.0                        # a scalar through a mask: an op, no sync
        w[mask] = w[mask]                    # an array through a mask: two ops, two syncs

    ops, _, _ = _run(work, np.arange(4.0))
    assert sum(ops.values()) == 8 and sum(_run.syncs.values()) == 4


def test_each_operation_is_charged_to_the_innermost_library_module():
    from mrcnn_edu.boxes import _box_iou
    backend.use("numpy")
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
    ops, _, _ = _run(lambda w: _box_iou(w, w), boxes)
    assert set(ops) == {"boxes"} and ops["boxes"] > 5
    # by function: the same operations, each charged to the innermost function that made it
    by_function, _, _ = _run(lambda w: _box_iou(w, w), boxes, by_function=True)
    assert set(by_function) == {"boxes._box_iou", "boxes._inter_union", "boxes._box_area"}
    assert sum(by_function.values()) == ops["boxes"]


def _tiny_model_and_batch():
    """A small model's config, two 64-px shapes samples and their stacked images."""
    from mrcnn_edu.data.shapes import ShapesDataset
    from mrcnn_edu.model import ModelConfig
    backend.use("numpy")
    cfg = ModelConfig(image_size=64, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(24.0, 32.0),
                      box_hidden=32, mask_channels=8, mask_convs=1, roi_batch=16)
    data = ShapesDataset(0, 64, "train")
    batch = [data[0], data[1]]
    return cfg, batch, np.stack([s[0] for s in batch])


def test_counting_changes_no_result_and_leaves_the_backend_as_it_was():
    from mrcnn_edu.model import MaskRCNN
    from mrcnn_edu.train import _to_targets
    cfg, batch, images = _tiny_model_and_batch()
    results = []
    for counted in (False, True):
        model = MaskRCNN(cfg, rng=np.random.default_rng(0))

        def step(m, o, b, i):
            results.append(m.loss_and_backward(images, _to_targets([s[1] for s in b], [s[2] for s in b]),
                                               np.random.default_rng(3)))
        if counted:
            ops, trips, _, _ = count_ops.count_steps(model, None, [batch], step, warmup=0)
            assert sum(ops.values()) > 500 and "roi" in ops and "nn.conv" in ops
        else:
            step(model, None, batch, 0)
        results.append({k: v.view(np.ndarray).copy() for k, v in model.gradients().items()})
    assert results[0] == results[2]
    assert all(np.array_equal(results[1][k], results[3][k]) for k in results[1])
    assert backend.xp is np and backend.get_array_module(np.zeros(1)) is np
    assert all(type(p) is np.ndarray for p in model.parameters().values())


def test_host_arrays_stay_host_arrays_as_under_cupy():
    """``get_array_module`` of the counting backend answers as CuPy's does: the device's module for an array
    the counted code made (or the plain array under such a view), NumPy for a host array the data made."""
    backend.use("numpy")
    seen = {}

    def work(w):
        made = backend.xp.zeros(3)
        seen.update(device=backend.get_array_module(made), param=backend.get_array_module(w),
                    owner=backend.get_array_module(made.view(np.ndarray).base if made.base is not None else made),
                    host=backend.get_array_module(np.zeros(3)), values=backend.get_array_module(1.0, [2]))
    _run(work, np.arange(4.0))
    assert seen["device"] is seen["param"] is seen["owner"] is not np
    assert seen["host"] is np and seen["values"] is np


def test_a_training_step_checks_its_targets_on_the_host_and_reads_back_only_what_it_must():
    """The loop's targets come as host arrays: ``check_targets`` reads their values there (no round trip) and
    sends them to the device; the mask targets need no read back of their table's width (``roi._slots``), and
    the mask-RoI sampler none of the positives' counts (the box head's sampler read them with its sizes)."""
    from mrcnn_edu.inputs import check_targets
    from mrcnn_edu.model import MaskRCNN
    from mrcnn_edu.train import _to_targets
    cfg, batch, images = _tiny_model_and_batch()
    sent = []

    def step(m, o, b, i):
        targets = _to_targets([s[1] for s in b], [s[2] for s in b])
        sent.extend(check_targets(targets, len(b), cfg))
        m.loss_and_backward(images, targets, np.random.default_rng(3))
    model = MaskRCNN(cfg, rng=np.random.default_rng(0))
    ops, trips, _, _ = count_ops.count_steps(model, None, [batch], step, warmup=0, by_function=True)
    assert trips and not [f for f in trips if f.startswith(("inputs.", "matching.")) or f == "roi._slots"], trips
    assert all(isinstance(a, count_ops.Counted) for t in sent for a in t)       # on the device
    assert [len(t.labels) for t in sent] == [len(s[2]) for s in batch]


def test_targets_of_host_arrays_go_to_the_device_field_by_field_whatever_their_masks_sizes():
    from mrcnn_edu.inputs import check_targets
    from mrcnn_edu.model import ModelConfig
    backend.use("numpy")
    masks = [np.zeros((1, 8, 8), bool), np.ones((2, 6, 5), bool)]
    targets = [dict(boxes=np.array([[1, 1, 4, 5]], np.float32), labels=np.array([2]), masks=masks[0]),
               dict(boxes=np.array([[0, 0, 2, 3], [1, 2, 5, 6]], np.float32), labels=np.array([1, 3]),
                    masks=masks[1])]
    out = []
    ops, trips, _ = _run(lambda w: out.extend(check_targets(targets, 2, ModelConfig(num_classes=4))), np.zeros(1))
    assert sum(trips.values()) == 0 and sum(ops.values()) == 3            # one transfer a field, no read back
    assert all(isinstance(a, count_ops.Counted) for t in out for a in t)
    for t, want in zip(out, targets):
        for got, key in zip(t, ("boxes", "labels", "masks")):
            np.testing.assert_array_equal(got.view(np.ndarray), want[key])
            assert got.shape == want[key].shape
