"""A training process killed outright (SIGKILL: no Ctrl-C handler runs, a file may be half written) at
random moments, and resumed each time, ends with exactly the parameters of a run never interrupted, and
leaves no temporary file behind."""
import subprocess
import sys
import time

import numpy as np

from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.model import ModelConfig
from mrcnn_edu.train import TrainConfig, train

SMALL = dict(image_size=64, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(48.0, 64.0),
             box_hidden=32, mask_channels=8, mask_convs=1, roi_batch=16)
SCHEDULE = dict(steps=40, batch_size=2, eval_every=15, val_images=3, checkpoint_every=1, log_every=1, flip=True,
                scale_jitter=(0.8, 1.2))
DRIVER = f"""
import sys
from pathlib import Path
from mrcnn_edu.model import ModelConfig
from mrcnn_edu.train import TrainConfig, train
out = Path(sys.argv[1])
train(out, ModelConfig(**{SMALL!r}), TrainConfig(**{SCHEDULE!r}), resume=(out / "checkpoint.npz").exists(),
      progress=False)
print("DONE", flush=True)
"""


def test_sigkill_at_random_moments_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    train(tmp_path / "straight", ModelConfig(**SMALL), TrainConfig(**SCHEDULE), progress=False)
    rng = np.random.default_rng(7)
    run, kills, attempts = tmp_path / "killed", 0, 0
    while True:
        attempts += 1
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(run)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if attempts <= 8:
            started = time.monotonic()
            # kill once the run is under way (past the imports) at a random moment
            while proc.poll() is None and not (run / "metrics.jsonl").exists() and time.monotonic() - started < 60:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            proc.kill()
        out, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            assert "DONE" in out
            break
        assert proc.returncode == -9, err
        kills += 1
    assert kills >= 3, f"only {kills} kills landed mid-run"
    straight = load_checkpoint(tmp_path / "straight" / "model.npz")["params"]
    resumed = load_checkpoint(run / "model.npz")["params"]
    assert straight.keys() == resumed.keys()
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
    assert load_checkpoint(run / "checkpoint.npz")["step"] == SCHEDULE["steps"]
    assert not list(run.glob("*.tmp")), list(run.glob("*"))
