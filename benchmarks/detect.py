"""Per-box Ablation-CAM and D-RISE on Faster R-CNN: camkit against pytorch-grad-cam, in one process.

Model: torchvision ``fasterrcnn_resnet50_fpn`` built random-init (``weights=None,
weights_backbone=None``: nothing is downloaded), ``min_size = max_size = --size``, one seeded
random image ``3 x size x size``, ``--boxes`` seeded random boxes of a fifth to a half of the
side (labels: each box's best-matching class, as camkit chooses them; the model's score
threshold is 0 for both libraries). Target layer
``model.backbone`` (the FPN's five levels, 5 x 256 channels), as in pytorch-grad-cam's Faster
R-CNN tutorial.

Cases, timed in alternation (each round runs each case once, in a new random order):

* camkit: ``explain_detections(..., method="ablationcam", box_score="sum")`` (the peer's box
  score), one map per box from one call (the detector before the layer once, then only rpn +
  roi_heads per chunk of ablated copies);
* pytorch-grad-cam 1.5.7 per box: ``AblationCAM(model, [model.backbone],
  reshape_transform=fasterrcnn_reshape_transform, ablation_layer=AblationLayerFasterRCNN())`` called
  once per box with that box's ``FasterRCNNBoxScoreTarget`` (its way to one map per box);
* pytorch-grad-cam, all boxes: one call with all boxes in one target (its usual single map).

Both ablate the same ``--channels`` (level, channel) pairs (the largest spatial variance; the
peer through a subclass of its ablation layer whose ``activations_to_be_ablated`` returns them),
``--batch`` copies per forward. All 1280 channels take ~1280 / batch tail forwards per call (about
0.12 s per ablated copy on 2 cores: rpn, box pooling and head, class-wise NMS), so the default
ablates 8; the per-forward saving is the same, and with more channels the fixed costs (the peer's
two extra forwards per call, camkit's detection pass, tail prefix and check) weigh less. The
speed-up for per-box maps grows with ``--boxes``: the peer needs one call per box.

Besides seconds, the table counts the images each case sends through the backbone and through
``roi_heads`` (forward pre-hooks, in the untimed warm-up run): a cost that does not depend on the
machine's load.

D-RISE (camkit, default options but ``--drise-masks`` masks): masked images per second with the
batch chosen from memory (``batch_size=None``, the default) against one and eight masks per forward.

Usage::

    .venv/bin/python benchmarks/detect.py            # a few minutes on 2 cores
    .venv/bin/python benchmarks/detect.py --quick    # smoke run: tiny image, few channels
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

CAMKIT = "camkit ablationcam, all boxes in one call"
PEER_PER_BOX = "pytorch-grad-cam AblationCAM, one call per box"
PEER_ALL = "pytorch-grad-cam AblationCAM, one call for all boxes (one map)"
DRISE_AUTO = "camkit drise, batch from memory"
DRISE_ONE = "camkit drise, one mask per forward"
DRISE_EIGHT = "camkit drise, 8 masks per forward"


@dataclass
class Setup:
    """The model, the image, the boxes and what both libraries ablate."""

    model: nn.Module
    image: torch.Tensor
    boxes: np.ndarray
    labels: np.ndarray
    channels: list[int]
    batch: int


def build(size: int, boxes: int, channels: int, batch: int, proposals: int = 1000) -> Setup:
    """The random-init Faster R-CNN, a seeded image, ``boxes`` boxes with camkit's labels, the channels.

    ``proposals`` is the RPN's ``post_nms_top_n`` at test time (torchvision's default 1000).
    """
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from camkit.detect import explain_detections
    from camkit.detect._ablation import Levels

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=size, max_size=size, rpn_post_nms_top_n_test=proposals
    ).eval()
    model.roi_heads.score_thresh = 0.0  # the peer then sees every box, as camkit does during a call
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)  # boxes of a fifth to a half of the side, anywhere inside the image
    sides = rng.uniform(size / 5, size / 2, (boxes, 2))
    corners = rng.uniform(0, 1, (boxes, 2)) * (size - sides)
    given = np.concatenate([corners, corners + sides], axis=1).round(1).tolist()
    found = explain_detections(model, image, boxes=given, method="eigencam").detections[0]  # labels: best match
    with torch.inference_mode():
        listed, _ = model.transform([image])
        levels = Levels(model.backbone(listed.tensors), "backbone")
    return Setup(model, image, found.boxes.numpy(), found.labels.numpy(), levels.top_variance(channels), batch)


def camkit_case(setup: Setup) -> Callable[[], Any]:
    from camkit.detect import explain_detections

    def run() -> Any:
        return explain_detections(
            setup.model, setup.image, boxes=setup.boxes, labels=setup.labels, method="ablationcam",
            target_layer="backbone", max_channels=len(setup.channels), batch_size=setup.batch, box_score="sum",
        ).maps["ablationcam"][0]  # fmt: skip

    return run


def peer_cases(setup: Setup) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayerFasterRCNN
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    chosen = np.asarray(setup.channels, dtype=np.int32)

    class SameChannels(AblationLayerFasterRCNN):  # type: ignore[misc]
        """The peer's FPN ablation layer, ablating the channels camkit ablates."""

        def activations_to_be_ablated(self, activations: Any, ratio_channels_to_ablate: float = 1.0) -> Any:
            self.indices = chosen.copy()
            return self.indices

    x = setup.image[None]

    def cam() -> Any:
        return AblationCAM(
            setup.model, [setup.model.backbone], reshape_transform=fasterrcnn_reshape_transform,
            ablation_layer=SameChannels(), batch_size=setup.batch,
        )  # fmt: skip

    def per_box() -> Any:
        with cam() as peer:
            return [
                peer(
                    input_tensor=x, targets=[FasterRCNNBoxScoreTarget(setup.labels[k : k + 1], setup.boxes[k : k + 1])]
                )
                for k in range(len(setup.boxes))
            ]

    def all_boxes() -> Any:
        with cam() as peer:
            return peer(input_tensor=x, targets=[FasterRCNNBoxScoreTarget(setup.labels, setup.boxes)])

    return per_box, all_boxes


def drise_cases(setup: Setup, masks: int) -> tuple[dict[str, Callable[[], Any]], int, int]:
    """The D-RISE cases, the batch ``batch_size=None`` chooses and the bytes per image it measured."""
    from camkit.detect import adapter_for, explain_detections
    from camkit.detect._drise import drise_batch_size, forward_bytes

    adapter = adapter_for(setup.model)
    with adapter.session():
        (image,) = adapter.to_input([setup.image])
        chosen = drise_batch_size(lambda images: adapter.run(images), image, masks)
        row = forward_bytes(lambda images: adapter.run(images), image)

    def case(batch: int | None) -> Callable[[], Any]:
        def run() -> Any:
            return explain_detections(
                setup.model, setup.image, boxes=setup.boxes, labels=setup.labels, method="drise",
                num_masks=masks, batch_size=batch, generator=torch.Generator().manual_seed(0),
            )  # fmt: skip

        return run

    return {DRISE_AUTO: case(None), DRISE_ONE: case(1), DRISE_EIGHT: case(8)}, chosen, row


def count_images(model: nn.Module, run: Callable[[], Any]) -> tuple[int, int]:
    """Images through ``model.backbone`` and through ``model.roi_heads`` in one ``run()`` (pre-hooks, removed after)."""
    counts = [0, 0]

    def backbone(_module: nn.Module, args: Any) -> None:
        counts[0] += int(args[0].shape[0])

    def roi_heads(_module: nn.Module, args: Any) -> None:
        counts[1] += len(args[1])  # one proposal tensor per image

    handles = [
        model.backbone.register_forward_pre_hook(backbone),
        model.roi_heads.register_forward_pre_hook(roi_heads),
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return counts[0], counts[1]


def timed(cases: dict[str, Callable[[], Any]], rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per case per round; each round runs every case once in a shuffled order."""
    order = list(cases)
    times: dict[str, list[float]] = {name: [] for name in order}
    shuffle = random.Random(seed)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return times


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``median (min–max)``."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ratios(times: dict[str, list[float]], slow: str, fast: str) -> list[float]:
    """Per-round ``t_slow / t_fast`` (paired: the same round)."""
    return [a / b for a, b in zip(times[slow], times[fast], strict=True)]


def table(times: dict[str, list[float]], reference: str, rounds: int, counts: dict[str, tuple[int, int]]) -> list[str]:
    """Markdown rows: case, seconds and ratio to ``reference`` (median, min–max), images through the model parts."""
    rows = [
        f"| case | seconds, median (min–max) of {rounds} | × {reference.split(',')[0]} | images through "
        "backbone / roi_heads |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        images = f"{counts[name][0]} / {counts[name][1]}"
        rows.append(f"| {name} | {spread(values)} | {spread(ratios(times, name, reference))} | {images} |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=320, help="image side and min_size = max_size (default 320)")
    parser.add_argument("--boxes", type=int, default=3, help="boxes explained (default 3)")
    parser.add_argument("--channels", type=int, default=8, help="(level, channel) pairs ablated (default 8)")
    parser.add_argument("--batch", type=int, default=8, help="ablated copies per forward (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--drise-masks", type=int, default=8, help="D-RISE masks per timed call (default 8)")
    parser.add_argument("--drise-rounds", type=int, default=2, help="D-RISE timed rounds (default 2)")
    parser.add_argument("--proposals", type=int, default=1000, help="RPN proposals per image (default 1000)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 128 px, 50 proposals, 2 boxes, 4 channels, 1 round"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.proposals, args.boxes, args.channels, args.batch = 128, 50, 2, 4, 2
        args.rounds, args.drise_masks, args.drise_rounds = 1, 4, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("camkit").setLevel(logging.WARNING)
    setup = build(args.size, args.boxes, args.channels, args.batch, args.proposals)
    per_box, all_boxes = peer_cases(setup)
    cases = {CAMKIT: camkit_case(setup), PEER_PER_BOX: per_box, PEER_ALL: all_boxes}
    counts = {name: count_images(setup.model, run) for name, run in cases.items()}  # also the untimed warm-up
    times = timed(cases, args.rounds)
    print(
        f"\n### Per-box Ablation-CAM, fasterrcnn_resnet50_fpn (random init), 3x{args.size}x{args.size}, "
        f"{args.proposals} proposals, {args.boxes} boxes, {args.channels} channels ablated, {args.batch} per forward, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("\n".join(table(times, CAMKIT, args.rounds, counts)))
    speedup = ratios(times, PEER_PER_BOX, CAMKIT)
    print(f"\ncamkit per-box maps vs pytorch-grad-cam one call per box: {spread(speedup)}x faster (median, min–max)")
    drise, chosen, row = drise_cases(setup, args.drise_masks)
    drise_times = timed(drise, args.drise_rounds)
    print(
        f"\n### D-RISE, {args.drise_masks} masks per call (cell_size 16, p 0.5): {row / 2**20:.0f} MiB of module "
        f"outputs per image, batch chosen from memory: {chosen} (the auto case includes that measuring forward)\n"
    )
    print(f"| case | masked images/s, median (min–max) of {args.drise_rounds} |\n|---|---|")
    for name, values in drise_times.items():
        print(f"| {name} | {spread([args.drise_masks / t for t in values])} |")
    print(f"\nbatch {chosen} (auto) vs 1: {spread(ratios(drise_times, DRISE_ONE, DRISE_AUTO))}x the images/s")
    print(f"batch 8 vs 1: {spread(ratios(drise_times, DRISE_ONE, DRISE_EIGHT))}x the images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
