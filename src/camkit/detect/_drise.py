r"""D-RISE: black-box saliency for detections from randomly masked copies of the image.

Petsiuk et al., "Black-box Explanation of Object Detectors via Saliency Maps", CVPR 2021
(arXiv:2006.03204). Each target detection :math:`d_t = (L_t, P_t)` (box, class-probability
vector) is compared with the detections :math:`d_j = (L_j, O_j, P_j)` of the image masked by
:math:`M_i`:

.. math:: s(d_t, d_j) = \mathrm{IoU}(L_t, L_j)\cdot\frac{P_t \cdot P_j}{\lVert P_t\rVert\,\lVert P_j\rVert}\cdot O_j,
    \qquad w_{t,i} = \max_j s(d_t, d_j), \qquad S_t = \sum_i w_{t,i}\, M_i

and :math:`S_t` is min-max normalised to ``[0, 1]``. The masks are RISE's: a ``cell_size``-pixel
grid of cells kept with probability ``p``, upsampled bilinearly and shifted by a random offset
below one cell. The detector is only called (any adapter, no gradients, under
``torch.inference_mode``); all boxes of an image share the same masked forwards (one
``(masks, K)`` weight matrix, one matrix product).

What is batched: ``batch_size`` masked copies per forward. ``batch_size=None`` (the default)
chooses it from memory, as the engine's :func:`camkit.engine.auto_batch_size` does: one forward
of the unmasked image measures :math:`r`, the bytes of every leaf module's outputs for one image
(an upper bound of what a masked image adds to a forward), and the batch is the largest of the
engine's candidates :math:`b` with :math:`b \cdot r` within the budget: half the free CUDA memory
on a GPU, :data:`CPU_BUDGET_BYTES` (2 GiB) on a CPU. On this project's 2-core CPU, Faster
R-CNN R50-FPN at 320 px (303 MiB of outputs per image: batch 4) ran 2.2x more masked images per
second at batch 8 than at batch 1 (``benchmarks/detect.py``). Masks are drawn in blocks of
:data:`DRAW_BLOCK` whatever the batch, so a seeded ``generator`` gives the same maps at every
batch size.

Example:
    >>> import torch
    >>> masks = random_masks(4, (10, 12), cell_size=4, p=0.5, generator=torch.Generator().manual_seed(0))
    >>> masks.shape, bool(((masks >= 0) & (masks <= 1)).all())
    (torch.Size([4, 10, 12]), True)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit.detect._maps import normalize_maps
from camkit.detect._types import Candidates, Detections, box_iou
from camkit.engine import CANDIDATES, auto_batch_size

__all__ = [
    "CPU_BUDGET_BYTES",
    "DRAW_BLOCK",
    "check_drise_options",
    "drise",
    "drise_batch_size",
    "forward_bytes",
    "random_masks",
    "similarity",
]

logger = logging.getLogger("camkit")

#: memory the masked images of one forward may take on a CPU when ``batch_size=None``
CPU_BUDGET_BYTES = 2 * 2**30
#: masks are drawn from the generator this many at a time, whatever the batch size
DRAW_BLOCK = 32


def random_masks(
    count: int,
    size: tuple[int, int],
    *,
    cell_size: int = 16,
    p: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """RISE masks ``(count, H, W)`` in ``[0, 1]``.

    Args:
        count: how many masks.
        size: the image's ``(H, W)``.
        cell_size: the grid cell in pixels.
        p: the probability that a cell is kept.
        generator: random source (its device is where the draws are made).
        device: where the masks go.

    Returns:
        The masks.
    """
    height, width = size
    rows, cols = -(-height // cell_size) + 1, -(-width // cell_size) + 1
    where = generator.device if generator is not None else torch.device("cpu")
    grid = (torch.rand(count, 1, rows, cols, generator=generator, device=where) < p).float()
    shifts = torch.randint(0, cell_size, (count, 2), generator=generator, device=where).tolist()
    big = F.interpolate(grid, size=(rows * cell_size, cols * cell_size), mode="bilinear", align_corners=False)
    masks = torch.stack([big[i, 0, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(shifts)])
    return masks.to(device) if device is not None else masks


def similarity(targets: Detections, vectors: Tensor, found: Candidates) -> Tensor:
    r"""D-RISE's similarity of every target with every detection of one masked image, ``(K, P)``.

    Args:
        targets: the detections to explain (boxes ``(K, 4)``).
        vectors: their class-probability vectors ``(K, C)``.
        found: the masked image's candidates.

    Returns:
        :math:`\mathrm{IoU} \cdot \cos(P_t, P_j) \cdot O_j`.
    """
    iou = box_iou(targets.boxes.to(found.boxes), found.boxes)
    cosine = F.normalize(vectors.to(found.probs), dim=1) @ F.normalize(found.probs, dim=1).t()
    return iou * cosine * found.objectness[None, :].to(iou)


def forward_bytes(run: Callable[[list[Tensor]], Any], image: Tensor) -> int:
    """Bytes of every leaf module's output tensors in one forward of ``image`` (plus the image).

    A module forward hook (registered for the call only) sums the outputs; with activations freed
    as the forward goes, this bounds from above what one more image adds to a forward.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        >>> forward_bytes(lambda images: net(torch.stack(images)), torch.zeros(3, 2, 2))  # 3 tensors of 12-16 floats
        176
    """
    total = [image.numel() * image.element_size()]

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if next(module.children(), None) is not None:
            return  # a container: its leaves count its work
        stack = [output]
        while stack:
            item = stack.pop()
            if isinstance(item, Tensor):
                total[0] += item.numel() * item.element_size()
            elif isinstance(item, list | tuple):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.inference_mode():
            run([image])
    finally:
        handle.remove()
    return total[0]


def drise_batch_size(
    run: Callable[[list[Tensor]], Any], image: Tensor, num_masks: int, budget_bytes: int | None = None
) -> int:
    """The masked images per forward for ``batch_size=None``: the most that fit the memory budget.

    Args:
        run: masked images → anything (the detector's forward).
        image: ``(3, H, W)`` on the model's device.
        num_masks: no more than this many.
        budget_bytes: memory one forward's images may take; default: half the free CUDA memory on
            a GPU, :data:`CPU_BUDGET_BYTES` elsewhere.

    Returns:
        The batch size (at least 1).
    """
    row = forward_bytes(run, image)
    device = image.device
    if device.type == "cuda":
        size = auto_batch_size(lambda _b: None, row, device, budget_bytes=budget_bytes)
    else:
        budget = CPU_BUDGET_BYTES if budget_bytes is None else budget_bytes
        size = max([b for b in CANDIDATES if b * row <= budget] or [1])
    size = max(1, min(size, num_masks))
    logger.info("drise: %d masked images per forward (%.1f MiB of outputs per image)", size, row / 2**20)
    return size


def _blocks(
    count: int, size: tuple[int, int], cell_size: int, p: float, generator: torch.Generator | None
) -> Iterator[Tensor]:
    """``count`` masks, one at a time, drawn :data:`DRAW_BLOCK` at a time."""
    done = 0
    while done < count:
        block = random_masks(min(DRAW_BLOCK, count - done), size, cell_size=cell_size, p=p, generator=generator)
        done += block.shape[0]
        yield from block


def drise(
    run: Callable[[list[Tensor]], list[Candidates]],
    image: Tensor,
    targets: Detections,
    vectors: Tensor,
    *,
    num_masks: int = 1000,
    cell_size: int = 16,
    p: float = 0.5,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """D-RISE maps of one image's target detections.

    Args:
        run: masked images (a list of ``(3, H, W)``) → their candidates (the adapter's run + decode).
        image: ``(3, H, W)`` in ``[0, 1]``.
        targets: the detections to explain (``K`` boxes).
        vectors: their class-probability vectors ``(K, C)``.
        num_masks: how many masked copies.
        cell_size: mask grid cell in pixels.
        p: probability that a cell is kept.
        batch_size: masked images per forward; ``None``: :func:`drise_batch_size`.
        generator: random source for reproducible masks.

    Returns:
        ``(K, H, W)`` maps in ``[0, 1]``.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    if batch_size is None:
        batch_size = drise_batch_size(run, image, num_masks)
    total = torch.zeros(len(targets), height * width, device=image.device, dtype=torch.float32)
    masks_left = _blocks(num_masks, (height, width), cell_size, p, generator)
    done = 0
    with torch.inference_mode():
        while done < num_masks:
            count = min(batch_size, num_masks - done)
            masks = torch.stack([next(masks_left) for _ in range(count)]).to(image.device, torch.float32)
            found = run([image * mask.to(image.dtype) for mask in masks])
            weights = torch.stack(
                [
                    similarity(targets, vectors, cand).amax(dim=1).float()
                    if len(cand)
                    else torch.zeros(len(targets), device=image.device)
                    for cand in found
                ]
            )  # (count, K)
            total += weights.to(total.device).t() @ masks.flatten(1)
            done += count
    maps = total.view(len(targets), height, width)
    return normalize_maps(maps)


def check_drise_options(num_masks: object, cell_size: object, p: object, batch_size: object) -> None:
    """Raise ``ValueError`` naming a bad D-RISE option."""
    for name, value in (("num_masks", num_masks), ("cell_size", cell_size), ("batch_size", batch_size)):
        if name == "batch_size" and value is None:
            continue  # chosen from memory
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"drise: {name} must be a positive int, got {value!r}")
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p < 1:
        raise ValueError(f"drise: p must be a probability in (0, 1), got {p!r}")
