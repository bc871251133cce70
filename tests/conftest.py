"""Shared fixtures: ``xp`` runs a test once on NumPy and once on CuPy (skipped cleanly without a GPU)."""
import numpy as np
import pytest

from mrcnn_edu import backend


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module of the backend under test; the switch is restored afterwards."""
    if request.param == "cupy" and not backend.gpu_available():
        pytest.skip("CuPy backend: no CuPy or no CUDA GPU on this machine")
    previous = backend.name
    module = backend.use(request.param)
    yield module
    backend.use(previous)


@pytest.fixture
def rng():
    """A seeded host generator: tests build inputs on the host and move them with ``xp.asarray``."""
    return np.random.default_rng(1234)


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv)`` runs ``mrcnn-edu argv``, which must fail in one line (the progress bar aside), with
    no traceback; returns ``(exit status, the line)``."""
    import re

    from mrcnn_edu.cli import main

    def run(argv):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in argv])
        err = capsys.readouterr().err
        lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not line.startswith("train:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        return stop.value.code, lines[0]
    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The folder of a short training run of the default model (300 steps of 4 images, about a minute on two
    cores), shared by the tests that need a model that has learned something: inspect, diagnose and
    evaluate's breakdown. It is written under pytest's temporary folder: tests never read a user's ``runs/``."""
    from mrcnn_edu.train import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "run"
    train(out, train_config=TrainConfig(steps=300, val_images=16, eval_every=10**6, checkpoint_every=10**6),
          progress=False)
    return out
