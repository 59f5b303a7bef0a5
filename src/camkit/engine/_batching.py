"""How many perturbed inputs to send per forward: the fastest on a CPU, the largest that fits on a GPU.

Perturbation methods (the Score-CAM family, AblationCAM, Recipro-CAM, noise methods) run many
forwards of modified inputs. The best number per forward depends on the device:

* **CPU**: bigger is not always faster. On a 2-core machine EfficientNet-Lite0 ran faster per image
  at batch 1 than at batch 16 (cache pressure). :func:`auto_batch_size` times a few candidate
  sizes once and keeps the one with the lowest time per row, cached under the caller's key (e.g.
  the model and the input shape), so the measurement is paid once.
* **CUDA**: throughput grows with the batch until memory runs out, so the choice is the largest
  candidate whose rows fit a memory budget: ``row_bytes`` per row against
  :func:`torch.cuda.mem_get_info`'s free memory (half of it by default, leaving room for the
  allocator's fragmentation and kernel workspaces).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence

import torch

__all__ = [
    "CANDIDATES",
    "CPU_BATCH_SIZE",
    "CUDA_CANDIDATES",
    "CUDA_FREE_FRACTION",
    "DEVICE_BATCH_SIZE",
    "auto_batch_size",
    "clear_cache",
    "default_batch_size",
]

logger = logging.getLogger("camkit")

#: Batch sizes tried by default on a CPU.
CANDIDATES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
#: Batch sizes chosen from by default on CUDA (larger: a GPU keeps gaining from bigger batches).
CUDA_CANDIDATES: tuple[int, ...] = (*CANDIDATES, 128, 256, 512, 1024)
#: Share of the free CUDA memory a batch may use when no ``budget_bytes`` is given.
CUDA_FREE_FRACTION = 0.5
#: On CPU, stop trying larger sizes once one is this much slower per row than the best so far.
GIVE_UP_RATIO = 1.5

_CACHE: dict[Hashable, int] = {}

#: Perturbed inputs per forward when none is given, on a CPU. On 2 cores (224 px; figures in
#: docs/performance.md) batch 8 was the fastest of 1/4/8/32 on ResNet-50 and MobileNetV3, within 10 %
#: of batch 4 on EfficientNet-Lite0, while 32 was 1.3-2x slower than the best on all three.
CPU_BATCH_SIZE = 8
#: ... and on an accelerator (CUDA, MPS), where larger batches keep paying.
DEVICE_BATCH_SIZE = 32


def default_batch_size(device: torch.device | str | None) -> int:
    """Perturbed inputs per forward when ``batch_size`` is not given: 8 on a CPU, 32 elsewhere.

    Example:
        >>> default_batch_size("cpu"), default_batch_size("cuda:0")
        (8, 32)
    """
    try:
        kind = torch.device(device).type if device is not None else "cpu"
    except (RuntimeError, TypeError):  # not a device: the caller's own check reports it
        kind = "cpu"
    return CPU_BATCH_SIZE if kind == "cpu" else DEVICE_BATCH_SIZE


def clear_cache() -> None:
    """Forget every CPU batch size measured so far (the next call of each key measures again)."""
    _CACHE.clear()


def _check(candidates: Sequence[int], row_bytes: int, budget_bytes: int | None, repeats: int) -> list[int]:
    sizes = sorted(set(candidates))
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"candidates must be positive ints, e.g. (1, 2, 4, 8, 16, 32, 64); got {tuple(candidates)!r}")
    if isinstance(row_bytes, bool) or not isinstance(row_bytes, int) or row_bytes < 0:
        raise ValueError(f"row_bytes must be an int >= 0 (memory one row needs), got {row_bytes!r}")
    if budget_bytes is not None and (not isinstance(budget_bytes, int) or budget_bytes < 1):
        raise ValueError(f"budget_bytes must be a positive int or None (device default), got {budget_bytes!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    return sizes


def _fitting(sizes: list[int], row_bytes: int, budget: int | None) -> list[int]:
    """The sizes whose rows fit ``budget`` (the smallest size when none does)."""
    if budget is None or row_bytes == 0:
        return sizes
    fit = [b for b in sizes if b * row_bytes <= budget]
    if not fit:
        logger.info("not even %d row(s) of %d bytes fit the budget of %d bytes; using 1", sizes[0], row_bytes, budget)
        return sizes[:1]
    return fit


def _fastest(
    run: Callable[[int], None], sizes: list[int], repeats: int, clock: Callable[[], float]
) -> tuple[int, dict[int, float]]:
    """Time ``run`` at each size (after one warm-up call at the smallest) and return the best per row."""
    run(sizes[0])  # warm-up: first-call costs (allocator, lazy init) must not count against size 1
    per_row: dict[int, float] = {}
    best = sizes[0]
    for size in sizes:
        fastest = float("inf")
        for _ in range(repeats):
            start = clock()
            run(size)
            fastest = min(fastest, clock() - start)
        per_row[size] = fastest / size
        if per_row[size] < per_row[best]:
            best = size
        elif per_row[size] > GIVE_UP_RATIO * per_row[best]:
            break  # clearly past the best size: larger batches only add cache pressure
    return best, per_row


def auto_batch_size(
    run: Callable[[int], None],
    row_bytes: int,
    device: torch.device | str,
    candidates: Sequence[int] | None = None,
    budget_bytes: int | None = None,
    *,
    key: Hashable | None = None,
    repeats: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    """Choose how many rows (perturbed inputs) to send per forward.

    On CUDA: the largest candidate ``b`` with ``b * row_bytes <= budget_bytes`` (default: half of
    the free memory reported by :func:`torch.cuda.mem_get_info`); nothing is run. On any other
    device: ``run(b)`` is timed for the candidates that fit ``budget_bytes`` (all of them when it is
    ``None``), in increasing order, best of ``repeats`` calls each after one warm-up call at the
    smallest size, and the size with the lowest time per row wins. Sizes stop being tried once one
    is 1.5x slower per row than the best so far. With ``key``, the CPU choice is cached under
    ``(device, key)`` and later calls return it without running anything (:func:`clear_cache`
    forgets it).

    Args:
        run: runs one forward of ``b`` rows (its result is not used; it may be real work).
        row_bytes: memory one row needs on the device (e.g. the input and activations of one
            perturbed input); 0 means "no limit".
        device: where the forwards run.
        candidates: batch sizes to choose from; default :data:`CANDIDATES` (1 to 64), on CUDA
            :data:`CUDA_CANDIDATES` (1 to 1024).
        budget_bytes: memory the rows of one forward may use; ``None``: the device default
            (half the free memory on CUDA, no limit elsewhere).
        key: cache key for the CPU measurement, e.g. ``(id(model), tuple(x.shape[1:]))``.
        repeats: timed calls per candidate on CPU (the fastest counts).
        clock: seconds as a float (a fake one makes the choice testable).

    Returns:
        The batch size.

    Raises:
        ValueError: for empty or non-positive candidates, a negative ``row_bytes``, a non-positive
            ``budget_bytes`` or ``repeats``.

    Example:
        >>> costs = {1: 1.0, 2: 1.5, 4: 5.0}  # seconds per call: batch 2 is the fastest per row
        >>> now = [0.0]
        >>> def run(b: int) -> None:
        ...     now[0] += costs[b]
        >>> auto_batch_size(run, 0, "cpu", candidates=(1, 2, 4), clock=lambda: now[0])
        2
    """
    device = torch.device(device)
    if candidates is None:
        candidates = CUDA_CANDIDATES if device.type == "cuda" else CANDIDATES
    sizes = _check(candidates, row_bytes, budget_bytes, repeats)
    if device.type == "cuda":
        if budget_bytes is None:
            free, _total = torch.cuda.mem_get_info(device)
            budget_bytes = int(free * CUDA_FREE_FRACTION)
        return _fitting(sizes, row_bytes, budget_bytes)[-1]
    sizes = _fitting(sizes, row_bytes, budget_bytes)
    cache_key = None if key is None else (str(device), key, tuple(sizes))
    if cache_key is not None and cache_key in _CACHE:
        return _CACHE[cache_key]
    if len(sizes) == 1:
        best = sizes[0]
    else:
        best, per_row = _fastest(run, sizes, repeats, clock)
        logger.debug("batch size %d chosen; seconds per row: %s", best, per_row)
    if cache_key is not None:
        _CACHE[cache_key] = best
    return best
