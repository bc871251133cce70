"""Training step time of the default shapes model, next to its twin built from torchvision's ``MaskRCNN``.

    python benchmarks/train_step.py [--steps 60] [--warmup 20] [--backend numpy|cupy]

The twin has the same architecture, layer by layer: the four-stage GroupNorm backbone, the FPN-lite with P2
and P3, the RPN on C4 with the same three anchors, RoIAlign 7x7 from P3 into the same box head (two fc
layers of 256) and RoIAlign 14x14 from P2 into the same mask head (two 3x3 convs of 64, a 2x transposed
conv, K sigmoid masks), the same sampling sizes (256 anchors, 64 RoIs of which at most a quarter positive),
AdamW, batches of 4 shapes images. Differences that torchvision does not let us remove: its anchors sit on
cell corners (ours are centred), and its mask head trains on every positive RoI where ours samples at most
``mask_rois_per_image`` = 8 of them an image; the table also times ours with every positive (``all
positives``) so the two can be compared like for like. Both start from scratch on the same batches; the
first ``--warmup`` steps are not timed. The models take turns, 10 steps each, so that a machine that slows
down for a while (a busy neighbour) slows them alike. Prints the median seconds per step, the ratio of the
medians, and the median ratio of the same step (steady even on a noisy machine); then the host's speed after
each round (``gemm_probe``) and the default's ratio round by round, which show when a round fell in one of the
machine's slow spells. With ``--backend cupy`` ours runs on the GPU and so does the twin (CUDA, TF32 off so
that both do float32 arithmetic).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import choose_backend, synchronize  # noqa: E402
from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.data.shapes import ShapesDataset  # noqa: E402
from mrcnn_edu.model import MaskRCNN, ModelConfig  # noqa: E402
from mrcnn_edu.optim import AdamW, clip_grad_norm, lay_end_to_end  # noqa: E402
from mrcnn_edu.train import _to_targets  # noqa: E402

try:
    import torch
    import torchvision  # noqa: F401
except ImportError:
    torch = None

DEVICE = "cpu"  # where the twin runs: "cuda" with --backend cupy


def batches(n, batch_size=4):
    stream = ShapesDataset(0, 128, "train")
    return [[stream[i] for i in range(s * batch_size, (s + 1) * batch_size)] for s in range(n)]


def train_step(model, opt, samples, step):
    """One AdamW step of ours on a batch of shapes samples, as ``mrcnn_edu.train`` takes it (GPU synchronized)."""
    images = np.stack([s[0] for s in samples])
    targets = _to_targets([s[1] for s in samples], [s[2] for s in samples])
    model.zero_grad()
    model.loss_and_backward(images, targets, np.random.default_rng([0, step, 1]))
    grads = lay_end_to_end(model.gradients(), opt.params)
    clip_grad_norm(grads, 10.0)
    opt.step(grads)
    backend.synchronize()


def ours(config):
    """One timed training step of our model at a time: ``step(samples, i)`` -> seconds."""
    model = MaskRCNN(config, rng=np.random.default_rng(0))
    model.flatten_parameters()
    opt = AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)

    def step(samples, i):
        t0 = time.perf_counter()
        train_step(model, opt, samples, i)
        return time.perf_counter() - t0
    return step


def time_ours(data, warmup, config):
    """The median seconds a step of ``config``'s model over ``data`` after ``warmup`` steps (run alone)."""
    step = ours(config)
    return statistics.median([step(samples, i) for i, samples in enumerate(data)][warmup:])


def torch_twin(cfg):
    """The default model rebuilt from torch.nn and torchvision.models.detection pieces."""
    from collections import OrderedDict

    from torch import nn
    from torchvision.models.detection import MaskRCNN as TVMaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
    from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    def block(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(min(cfg.groups, c_out), c_out),
                nn.ReLU(inplace=True)]

    c1, c2, c3, c4 = cfg.channels
    f = cfg.fpn_channels

    class Backbone(nn.Module):
        out_channels = f

        def __init__(self):
            super().__init__()
            self.stage1 = nn.Sequential(*block(3, c1, 2))
            self.stage2 = nn.Sequential(*block(c1, c2, 2), *block(c2, c2, 1))
            self.stage3 = nn.Sequential(*block(c2, c3, 2), *block(c3, c3, 1))
            self.stage4 = nn.Sequential(*block(c3, c4, 2), *block(c4, c4, 1))
            self.lateral4, self.lateral3, self.lateral2 = nn.Conv2d(c4, f, 1), nn.Conv2d(c3, f, 1), nn.Conv2d(c2, f, 1)
            self.smooth3 = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.ReLU(inplace=True))
            self.smooth2 = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.ReLU(inplace=True))

        def forward(self, x):
            x2 = self.stage2(self.stage1(x))
            x3 = self.stage3(x2)
            x4 = self.stage4(x3)
            up = nn.functional.interpolate
            l3 = self.lateral3(x3) + up(self.lateral4(x4), scale_factor=2, mode="nearest")
            l2 = self.lateral2(x2) + up(l3, scale_factor=2, mode="nearest")
            return OrderedDict(p2=self.smooth2(l2), p3=self.smooth3(l3), c4=x4)

    class C4RPN(RegionProposalNetwork):
        """torchvision's RPN, on C4 only (its head would otherwise run on every level of the dict)."""

        def forward(self, images, features, targets=None):
            return super().forward(images, OrderedDict(c4=features["c4"]), targets)

    k = len(cfg.anchor_sizes) * len(cfg.anchor_ratios)
    anchors = AnchorGenerator(sizes=(tuple(int(s) for s in cfg.anchor_sizes),), aspect_ratios=(cfg.anchor_ratios,))
    mask_head = nn.Sequential(*[m for _ in range(cfg.mask_convs) for m in (nn.Conv2d(f, cfg.mask_channels, 3, padding=1),
                                                                          nn.ReLU(inplace=True))])
    model = TVMaskRCNN(
        Backbone(), num_classes=None, min_size=cfg.image_size, max_size=cfg.image_size,
        image_mean=list(cfg.pixel_mean), image_std=list(cfg.pixel_std),
        box_roi_pool=MultiScaleRoIAlign(["p3"], cfg.box_pool, cfg.sampling_ratio),
        box_head=TwoMLPHead(f * cfg.box_pool ** 2, cfg.box_hidden),
        box_predictor=FastRCNNPredictor(cfg.box_hidden, cfg.num_classes),
        box_batch_size_per_image=cfg.roi_batch, box_positive_fraction=cfg.roi_positive_fraction,
        mask_roi_pool=MultiScaleRoIAlign(["p2"], cfg.mask_pool, cfg.sampling_ratio),
        mask_head=mask_head, mask_predictor=MaskRCNNPredictor(cfg.mask_channels, cfg.mask_channels, cfg.num_classes))
    model.rpn = C4RPN(anchors, RPNHead(c4, k), 0.7, 0.3, cfg.rpn_batch, cfg.rpn_positive_fraction,
                      dict(training=cfg.rpn_pre_nms, testing=cfg.rpn_pre_nms),
                      dict(training=cfg.rpn_post_nms_train, testing=cfg.rpn_post_nms_test), cfg.rpn_nms)
    return model


def twin(cfg):
    """One timed training step of the torchvision twin at a time: ``step(samples, i)`` -> seconds."""
    torch.manual_seed(0)
    model = torch_twin(cfg).to(DEVICE).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)

    def step(samples, i):
        t0 = time.perf_counter()
        images = [torch.from_numpy(s[0]).to(DEVICE).permute(2, 0, 1).float() / 255 for s in samples]
        targets = [dict(boxes=torch.from_numpy(t["boxes"]).to(DEVICE), labels=torch.from_numpy(t["labels"]).to(DEVICE),
                        masks=torch.from_numpy(t["masks"].astype(np.uint8)).to(DEVICE))
                   for t in _to_targets([s[1] for s in samples], [s[2] for s in samples])]   # host arrays
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        synchronize(torch, DEVICE)
        return time.perf_counter() - t0
    return step


def interleaved(steppers, data, block=10, between=None):
    """Each model in turn takes ``block`` steps (its next batches), then the next model, until every model has
    trained on all of ``data`` in order: a machine that slows down for a while slows all of them alike, and a
    block keeps each model's caches warm as a run of its own would. ``between()`` runs after each round.
    -> name -> step times, in batch order."""
    times = {name: [] for name in steppers}
    for start in range(0, len(data), block):
        for name, step in steppers.items():
            times[name] += [step(data[i], i) for i in range(start, min(start + block, len(data)))]
        if between is not None:
            between()
    return times


def gemm_probe(repeats=50):
    """Milliseconds of one 256 x 256 x 256 float32 GEMM on the host (the median of ``repeats``, inputs in the
    cache): how fast the host's two cores share a matrix product at this moment. The 2-core benchmark machine
    moves between two speeds within minutes (here about 0.19 ms and 0.28 ms), and the training step's time
    follows this probe, not Python's or the memory's speed (benchmarks/RESULTS.md, "Issue 16, sixth pass");
    printing it says which speed a run saw."""
    a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    a @ a
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None, help="numpy (default) or cupy")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = choose_backend(args.backend, torch)
    data = batches(args.steps)
    cfg = ModelConfig()
    print(f"backend {backend.name}, {os.cpu_count()} cores, NumPy {np.__version__}"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads) on {DEVICE}" if torch
             else ", torch absent"))
    print(f"median s/step over steps {args.warmup}..{args.steps} (batch 4, 128 x 128, from scratch; the models "
          f"take turns, 10 steps each)\n")
    print("| model | s/step | vs torchvision twin | same step, paired |")
    print("| --- | ---: | ---: | ---: |")
    steppers = {"mrcnn-edu default (8 mask RoIs an image)": ours(cfg),
                "mrcnn-edu, all positives train the mask head": ours(ModelConfig(mask_rois_per_image=0))}
    if torch:
        steppers["torchvision MaskRCNN twin"] = twin(cfg)
    probes = []
    every_step = interleaved(steppers, data, between=lambda: probes.append(gemm_probe()))
    times = {name: t[args.warmup:] for name, t in every_step.items()}
    t_twin = times.get("torchvision MaskRCNN twin")
    for name, t in times.items():
        if t_twin:   # the ratio of the medians, and the median of the ratios of the same step
            paired = statistics.median(a / b for a, b in zip(t, t_twin))
            print(f"| {name} | {statistics.median(t):.3f} | {statistics.median(t) / statistics.median(t_twin):.2f} "
                  f"| {paired:.2f} |")
        else:
            print(f"| {name} | {statistics.median(t):.3f} | - | - |")
    print(f"\nthe machine's speed after each round of 10 steps: a 256 x 256 float32 GEMM in "
          f"{', '.join(f'{p:.2f}' for p in probes)} ms")
    if t_twin:   # the default's ratio round by round: a slow spell shows as a round of its own
        mine, theirs = every_step["mrcnn-edu default (8 mask RoIs an image)"], every_step["torchvision MaskRCNN twin"]
        rounds = [statistics.median(mine[i:i + 10]) / statistics.median(theirs[i:i + 10])
                  for i in range(0, len(data), 10)]
        print(f"the default's ratio round by round: {', '.join(f'{r:.2f}' for r in rounds)} (rounds of the first "
              f"{args.warmup} steps untimed)")


if __name__ == "__main__":
    main()
