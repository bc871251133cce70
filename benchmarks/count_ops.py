"""How many array operations and host round trips one training step makes, by library module.

    python benchmarks/count_ops.py [--steps 3] [--warmup 1] [--top 15] [--json F] [--by module|function]

On a GPU every array operation is at least one kernel launch, and each costs the host 10 to 15 us whatever
its size; a host round trip (``.item()``, ``bool()``/``float()``/``int()`` of an array, ``backend.to_host``)
also waits for every kernel before it. Both are counted here on NumPy, so the count runs on any machine:

* the backend's array module is replaced by a counting one (``backend.xp`` and ``get_array_module``): every
  ``xp.<function>`` call is one operation (``xp.zeros``, ``xp.exp``, ``xp.concatenate``, ...); as under
  CuPy, ``get_array_module`` of a host array (the data's, before it is sent) is NumPy, whose work is not
  counted;
* the parameters and the arrays those calls return are ``Counted`` arrays, an ``ndarray`` subclass whose
  ``__array_ufunc__`` and ``__array_function__`` count every arithmetic operator, ufunc, reduction
  (``x.sum()``) and NumPy function applied to them, and whose ``astype``, ``copy``, fancy indexing,
  assignments into arrays and a few other methods count one operation each. Views (reshape, transpose,
  basic slicing) launch nothing on a GPU and are not counted (a ``reshape`` or ``ravel`` that has to copy
  counts one), nor are ``xp.asarray`` /
  ``xp.ascontiguousarray`` of a device array that is already what they ask for and ``astype(..., copy=False)``
  to its own dtype (CuPy returns the array itself), nor ``xp.split``, ``xp.broadcast_to`` and the other
  functions that return views, nor ``xp.empty`` (an allocation); ``xp.asarray`` of a host array (a transfer)
  counts, and a mean (``x.mean()``, one reduction kernel in CuPy, two ufuncs in NumPy) counts once;
* each operation is charged to the innermost library module on the call stack (``backend.py`` aside), so
  the table says which stage launches what.

A third column counts the size syncs: an operation whose result's size depends on the data (``nonzero``,
indexing with a boolean mask, assigning an array through one) makes CuPy read that size back before it can
allocate the result, a wait for the device like a round trip, though none of the issue's kinds.

The counts are a model of a GPU's launches, not a trace of CuPy: a CuPy call may launch more than one kernel
(a reduction with ``keepdims``, a sort), and a CuPy-only fused kernel would count as one. They are exact and
repeatable: the same step of the same code gives the same numbers, which is what a before/after needs.
"""
from __future__ import annotations

import argparse
import json
import sys
import weakref
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrcnn_edu import backend  # noqa: E402

# ndarray methods that compute (a kernel each on a GPU) without going through a ufunc or NumPy function
COUNTED_METHODS = ("astype", "copy", "argmax", "argmin", "argsort", "nonzero", "repeat", "take", "dot", "sort",
                   "fill", "cumsum", "round", "mean", "var", "std", "__getitem__", "__setitem__")
# functions that return a device array itself when it is already what they make (no kernel on a GPU); they
# count when they copy, and always for a host array (a transfer to the device)
AS_IS = ("asarray", "asanyarray", "ascontiguousarray")
# functions that launch nothing on a GPU: an allocation, or a view of their input (counted if NumPy copied)
NO_KERNEL = ("empty", "empty_like")
VIEWS = ("split", "array_split", "broadcast_to", "moveaxis", "swapaxes", "expand_dims", "squeeze", "transpose",
         "reshape", "ravel")
# methods and conversions that bring a value back to the host (a synchronization on a GPU)
ROUND_TRIPS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
# operations whose result has a size that depends on the data: CuPy reads that size back to allocate the
# result, a wait for the device like a round trip. Counted apart (each is also an operation), as are indexing
# with a boolean mask and assigning an array through one.
SIZE_SYNCS = ("nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract")


class Tally:
    """The operations, host round trips and size syncs counted so far, by library module."""

    def __init__(self):
        self.ops = Counter()
        self.round_trips = Counter()
        self.syncs = Counter()        # operations whose result's size the host must read (SIZE_SYNCS)
        self.names = Counter()        # (module, operation name): for the details
        self.active = False
        self.by_function = False      # charge to the innermost library function (module.function), not module

    def add(self, kind, name):
        if not self.active:
            return
        module = _library_caller(self.by_function)
        {"op": self.ops, "round trip": self.round_trips, "sync": self.syncs}[kind][module] += 1
        if kind != "sync":
            self.names[(module, name)] += 1


TALLY = Tally()


def _library_caller(by_function=False):
    """The innermost ``mrcnn_edu`` module on the stack, ``backend`` and this file aside ("other" if none); with
    ``by_function``, that module's function as well (``boxes._box_iou``)."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("mrcnn_edu.") and module != "mrcnn_edu.backend":
            where = module[len("mrcnn_edu."):]
            return f"{where}.{frame.f_code.co_name}" if by_function else where
        frame = frame.f_back
    return "other"


def _plain(a):
    """``a`` with every ``Counted`` array in it (also inside lists and tuples) seen as a plain ndarray."""
    if isinstance(a, Counted):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_plain(x) for x in a)
    return a


# the plain arrays under the ``Counted`` views (id -> weak reference): the device's memory too, for a view's
# ``base`` or a flat buffer's owner (ndarrays cannot be hashed, so no WeakSet)
ON_DEVICE = {}


def _on_device(a):
    ref = ON_DEVICE.get(id(a))
    return isinstance(a, Counted) or (ref is not None and ref() is a)


def _counted(a):
    """``a`` with every ndarray in it seen as a ``Counted`` array, and a NumPy scalar as a 0-d one (CuPy's
    reductions and scalar indexing give 0-d device arrays: reading one back is a host round trip)."""
    if isinstance(a, np.ndarray) and not isinstance(a, Counted):
        ON_DEVICE[id(a)] = weakref.ref(a)
        return a.view(Counted)
    if isinstance(a, np.generic):
        return np.asarray(a).view(Counted)
    if isinstance(a, tuple):
        return tuple(_counted(x) for x in a)
    if isinstance(a, list):
        return [_counted(x) for x in a]
    return a


class Counted(np.ndarray):
    """An ndarray that counts each operation applied to it in ``TALLY``."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        TALLY.add("op", ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        return _counted(result)

    def __array_function__(self, func, types, args, kwargs):
        TALLY.add("op", func.__name__)
        return _counted(func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()}))


def _counting_method(name, kind):
    base = getattr(np.ndarray, name)

    def method(self, *args, **kwargs):
        if name == "__getitem__" and not _fancy(args[0]):
            return _counted(base(self, *args, **kwargs))     # a view: nothing launched
        result = base(self.view(np.ndarray), *_plain(args), **{k: _plain(v) for k, v in kwargs.items()})
        if not (name == "astype" and _same_array(self, result)):   # astype(copy=False) to its own dtype: itself
            TALLY.add(kind, name)
        if name == "nonzero" or (name in ("__getitem__", "__setitem__") and _masked(args)):
            TALLY.add("sync", name)
        return _counted(result)
    method.__name__ = name
    return method


def _same_array(a, b):
    """Whether ``b`` is ``a`` itself, seen anew (same memory, shape and dtype): no copy was made."""
    return (isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _masked(args):
    """Whether ``a[index]`` / ``a[index] = value`` (``args``) goes through a boolean mask (an array as the
    value, for an assignment): the result's size, or the values' places, depend on the mask's content."""
    parts = args[0] if isinstance(args[0], tuple) else (args[0],)
    boolean = any(isinstance(p, np.ndarray) and p.dtype == bool for p in parts)
    return boolean and (len(args) == 1 or (isinstance(args[1], np.ndarray) and args[1].ndim > 0))


def _fancy(index):
    """Whether indexing with ``index`` copies (an integer or boolean array in it) rather than takes a view."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (np.ndarray, list)) for p in parts)


def _reshaping_method(name):
    """``reshape`` / ``ravel``: a view, not counted, unless NumPy had to copy (a kernel on a GPU too)."""
    base = getattr(np.ndarray, name)

    def method(self, *args, **kwargs):
        plain = self.view(np.ndarray)
        result = base(plain, *args, **kwargs)
        if result.size and not np.may_share_memory(result, plain):
            TALLY.add("op", name)
        return _counted(result)
    method.__name__ = name
    return method


for _name in ("reshape", "ravel"):
    setattr(Counted, _name, _reshaping_method(_name))
for _name in COUNTED_METHODS:
    setattr(Counted, _name, _counting_method(_name, "op"))
for _name in ROUND_TRIPS:
    setattr(Counted, _name, _counting_method(_name, "round trip"))


class _CountingUfunc:
    """``xp.add`` and friends: calls and ``.at`` / ``.reduce`` / ... count one operation each."""

    def __init__(self, ufunc):
        self._ufunc = ufunc

    def __call__(self, *args, **kwargs):
        return _call(self._ufunc, self._ufunc.__name__, args, kwargs)

    def __getattr__(self, name):
        attr = getattr(self._ufunc, name)
        if name in ("at", "reduce", "accumulate", "outer", "reduceat"):
            return lambda *a, **k: _call(attr, f"{self._ufunc.__name__}.{name}", a, k)
        return attr


def _call(func, name, args, kwargs):
    result = func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()})
    if not _launches_nothing(name, args, result):
        TALLY.add("op", name)
    if name in SIZE_SYNCS:
        TALLY.add("sync", name)
    return _counted(result)


def _launches_nothing(name, args, result):
    """Whether the call ``name(*args) -> result`` would launch no kernel on a GPU (see ``AS_IS``, ``NO_KERNEL``,
    ``VIEWS``)."""
    if name in NO_KERNEL:
        return True
    if not args or not isinstance(args[0], Counted):
        return False
    if name in AS_IS:
        return _same_array(args[0], result)
    if name in VIEWS:
        first = result[0] if isinstance(result, (list, tuple)) and result else result
        return isinstance(first, np.ndarray) and np.may_share_memory(_plain(args[0]), _plain(first))
    return False


class CountingModule:
    """NumPy as the backend's array module, every function call counted (classes and constants as they are)."""

    __name__ = "numpy"

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, np.ufunc):
            return _CountingUfunc(attr)
        if callable(attr) and not isinstance(attr, type):
            return lambda *a, **k: _call(attr, name, a, k)
        return attr


def counting(model, opt=None):
    """Switch the backend to the counting module and make the model's parameters (and the flat array an
    optimizer updates them through, ``Module.flatten_parameters``) ``Counted``, in place; returns a function
    that undoes all of it."""
    if backend.name != "numpy":
        raise RuntimeError("count_ops counts on the NumPy backend")
    module, saved = CountingModule(), (backend.xp, backend.get_array_module, backend.to_host)
    original_to_host = backend.to_host

    def to_host(a):
        TALLY.add("round trip", "to_host")
        return original_to_host(a)

    def get_array_module(*arrays):   # as CuPy's: the device's module for a device array, NumPy for a host one
        return module if any(_on_device(a) for a in arrays) else np

    backend.xp, backend.get_array_module, backend.to_host = module, get_array_module, to_host
    for m in model.modules():
        for key, p in m.params.items():
            m.params[key] = _counted(p)
    flat = getattr(opt, "_flat_params", None)
    if flat is not None:
        opt._flat_params = _counted(flat)

    def undo():
        backend.xp, backend.get_array_module, backend.to_host = saved
        for m in model.modules():
            for key, p in m.params.items():
                m.params[key] = p.view(np.ndarray)
        if flat is not None:
            opt._flat_params = flat
    return undo


def count_steps(model, opt, batches, step_fn, warmup=1, by_function=False):
    """Run ``step_fn(model, opt, batch, i)`` on each batch; the steps after ``warmup`` are counted. Returns
    ``(ops by module, round trips by module, (module, name) counts, size syncs by module)``, per counted step
    (by ``module.function`` with ``by_function``)."""
    undo = counting(model, opt)
    try:
        TALLY.__init__()
        TALLY.by_function = by_function
        for i, batch in enumerate(batches):
            TALLY.active = i >= warmup
            step_fn(model, opt, batch, i)
        TALLY.active = False
    finally:
        undo()
    n = max(len(batches) - warmup, 1)

    def per_step(counter):
        return {k: v / n for k, v in counter.most_common()}
    return per_step(TALLY.ops), per_step(TALLY.round_trips), per_step(TALLY.names), per_step(TALLY.syncs)


def main(argv=None):
    from mrcnn_edu.data.shapes import ShapesDataset
    from mrcnn_edu.model import MaskRCNN, ModelConfig
    from mrcnn_edu.optim import AdamW
    from train_step import train_step

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="steps counted (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="the most frequent operations listed")
    parser.add_argument("--json", help="also write the counts here")
    parser.add_argument("--by", choices=["module", "function"], default="module",
                        help="charge each operation to the innermost library module (default) or function")
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                        help="accepted as by every benchmark; the count always runs on NumPy (it is no timing)")
    args = parser.parse_args(argv)
    backend.use("numpy")
    data = ShapesDataset(0, 128, "train")
    model = MaskRCNN(ModelConfig(), rng=np.random.default_rng(0))
    model.flatten_parameters()        # as train.train does
    opt = AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    batches = [[data[4 * i + k] for k in range(4)] for i in range(args.warmup + args.steps)]
    ops, trips, names, syncs = count_steps(model, opt, batches, lambda m, o, b, i: train_step(m, o, b, i),
                                           args.warmup, by_function=args.by == "function")
    width = 44 if args.by == "function" else 20
    print(f"one training step of the default model (batch 4, 128 px), mean over {args.steps} steps:")
    print(f"{args.by:<{width}}{'array ops':>12}{'round trips':>14}{'size syncs':>13}")
    for where in sorted(set(ops) | set(trips) | set(syncs), key=lambda m: -ops.get(m, 0)):
        print(f"{where:<{width}}{ops.get(where, 0):>12.0f}{trips.get(where, 0):>14.0f}{syncs.get(where, 0):>13.0f}")
    print(f"{'total':<{width}}{sum(ops.values()):>12.0f}{sum(trips.values()):>14.0f}{sum(syncs.values()):>13.0f}")
    print(f"\nthe {args.top} most frequent ({args.by}: operation):")
    for (module, name), n in list(names.items())[:args.top]:
        print(f"  {n:8.0f}  {module}: {name}")
    if args.json:
        Path(args.json).write_text(json.dumps({"ops": ops, "round_trips": trips, "size_syncs": syncs,
                                               "total_ops": sum(ops.values()),
                                               "total_round_trips": sum(trips.values()),
                                               "total_size_syncs": sum(syncs.values())}, indent=1))


if __name__ == "__main__":
    main()
