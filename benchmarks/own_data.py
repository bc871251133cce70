"""Own data at the sizes users bring: how long a large photo takes to load, and how much memory a step needs.

    python benchmarks/own_data.py

Prints two Markdown tables:

1. the peak resident memory of a process that runs two training steps of the shapes model, for several
   batch sizes and image sizes (with the RoI counts of ``shapes_model_settings``, as ``mrcnn-edu train
   --image-size`` sets them), next to ``train.step_memory_mb``, the estimate ``train`` uses to refuse a batch
   that cannot fit (each in a fresh process, since a process's peak never goes down);
2. a 4000 x 3000 JPEG (12 MP, a phone photo) with three object masks, reduced to the model's 128 px by
   ``resize_and_pad`` (what training and ``evaluate`` do), read straight at that size by ``read_image_resized``
   (what ``predict`` does), and three detections mapped back onto the 12 MP image by ``undo_resize_and_pad``.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrcnn_edu.data import images  # noqa: E402
from mrcnn_edu.data.shapes import shapes_model_settings  # noqa: E402
from mrcnn_edu.model import ModelConfig  # noqa: E402
from mrcnn_edu.train import step_memory_mb  # noqa: E402

PEAK = """
import resource, sys
import numpy as np
from mrcnn_edu import backend
backend.keep_freed_memory()
from mrcnn_edu.data.shapes import shapes_model_settings
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.train import ShapesData, _to_targets
batch, size = int(sys.argv[1]), int(sys.argv[2])
model = MaskRCNN(ModelConfig(**shapes_model_settings(size)), rng=np.random.default_rng(0))
samples = ShapesData(0, size, 1).batch(0, batch)
images, targets = np.stack([s[0] for s in samples]), _to_targets([s[1] for s in samples], [s[2] for s in samples])
for step in range(2):
    model.zero_grad()
    model.loss_and_backward(images, targets, np.random.default_rng(step))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _median_seconds(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loading_table():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        yy, xx = np.mgrid[0:3000, 0:4000]
        photo = np.stack([(xx // 16) % 256, (yy // 12) % 256, ((xx + yy) // 30) % 256], -1).astype(np.uint8)
        Image.fromarray(photo).save(path, quality=90)
        masks = np.zeros((3, 3000, 4000), bool)
        masks[0, 1000:2000, 500:1500] = masks[1, 100:2900, 3000:3900] = masks[2, 2500:2600, 100:3000] = True
        image = images.read_image(path)
        _, small, scale = images.resize_and_pad(image, masks, 128)
        boxes = images.boxes_from_masks(small)
        rows = [("read_image (full 12 MP decode)", _median_seconds(lambda: images.read_image(path))),
                ("resize_and_pad to 128 px, image and 3 masks", _median_seconds(
                    lambda: images.resize_and_pad(image, masks, 128))),
                ("read_image_resized to 128 px (JPEG draft)", _median_seconds(
                    lambda: images.read_image_resized(path, 128))),
                ("undo_resize_and_pad: 3 masks back onto 12 MP", _median_seconds(
                    lambda: images.undo_resize_and_pad(boxes, small, scale, (3000, 4000))))]
    print("\n| 4000 x 3000 JPEG, 3 masks | median s |\n| --- | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


def memory_table():
    print("| images a step | image size | peak MiB (measured) | step_memory_mb |\n| ---: | ---: | ---: | ---: |")
    for batch, size in ((1, 128), (4, 128), (16, 128), (1, 256), (4, 256), (1, 512), (4, 512)):
        out = subprocess.run([sys.executable, "-c", PEAK, str(batch), str(size)], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[1]).stdout
        fit = step_memory_mb(ModelConfig(**shapes_model_settings(size)), batch)
        print(f"| {batch} | {size} | {float(out):.0f} | {fit:.0f} |")


if __name__ == "__main__":
    # the memory first: on Linux a process's peak survives exec, so the children must start from a small parent
    memory_table()
    loading_table()
