"""Guarantee 2, leaks: repeated extractions keep memory flat, and nothing keeps the model alive.

The fast suite runs 50 consecutive extractions per method family and front door; the ``heavy``
marker (``make test-all``) runs 1,000. Both require zero growth of the live tensor count and less
than 1 MiB of resident-memory growth after a warm-up.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest
import torch

from camkit.registry import get_method
from reliability.support import DOORS, FAMILIES, METHODS, hook_count, live_tensors, maps, rss_bytes, small_cnn, torchcam

MIB = 2**20


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """Only reference counting frees objects inside the test: a reference cycle keeps its objects alive."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _growth(door: str, family: str, count: int) -> tuple[int, int]:
    """Live-tensor and RSS growth over ``count`` extractions cycling through the family's methods."""
    model = small_cnn()
    x = torch.rand(2, 3, 8, 8)
    names = FAMILIES[family]

    def run(index: int) -> None:
        name = names[index % len(names)]
        cams = maps(door, name, model, x, class_idx=index % 3)
        assert cams.shape == (2, 8, 8)

    # pytest keeps every log record it captures (CAM logs its automatic head choice on each call):
    # that is pytest's memory, not camkit's, so logging is off while memory is measured
    logging.disable(logging.CRITICAL)
    try:
        for index in range(2 * len(names)):  # warm-up: allocator pools, lazily built kernels and caches
            run(index)
        tensors, rss = live_tensors(), rss_bytes()  # count first: the object list itself takes memory
        for index in range(count):
            run(index)
        return live_tensors() - tensors, rss_bytes() - rss
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("door", DOORS)
def test_50_extractions_keep_memory_flat(door: str, family: str) -> None:
    tensors, rss = _growth(door, family, 50)
    assert tensors == 0
    assert rss < MIB, f"RSS grew by {rss / MIB:.2f} MiB"


@pytest.mark.heavy
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("door", DOORS)
def test_1000_extractions_keep_memory_flat(door: str, family: str) -> None:
    tensors, rss = _growth(door, family, 1000)
    assert tensors == 0
    assert rss < MIB, f"RSS grew by {rss / MIB:.2f} MiB"


@pytest.mark.usefixtures("no_cycle_collector")
@pytest.mark.parametrize("name", METHODS)
def test_open_extractor_in_a_training_loop_holds_the_last_forward_only(name: str) -> None:
    if get_method(name).black_box:
        pytest.skip(f"{name} is black-box: it holds the model input, not a layer's activation")
    model = small_cnn().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 8, 8)
    outputs: list[weakref.ref[torch.Tensor]] = []
    handle = model[3].register_forward_hook(lambda _m, _i, out: outputs.append(weakref.ref(out)))
    with torchcam(name, model) as extractor:
        for step in range(6):
            optimizer.zero_grad()
            loss = model(x).logsumexp(dim=1).mean()
            loss.backward()
            optimizer.step()
            del loss
            if step % 2:  # now and then a map of the current weights
                extractor(0, model(x))
        alive = [index for index, ref in enumerate(outputs) if ref() is not None]
        assert len(alive) == 1, f"activations of {len(alive)} forwards are still alive"
    handle.remove()
    assert all(ref() is None for ref in outputs), "the closed extractor still holds an activation"


@pytest.mark.usefixtures("no_cycle_collector")
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_model_freed_by_reference_counting_after_use(door: str, name: str) -> None:
    model = small_cnn()
    model_ref = weakref.ref(model)
    x = torch.rand(2, 3, 8, 8)
    if door == "torchcam":
        with torchcam(name, model) as extractor:
            cams = extractor(0, model(x))
        extractor_ref = weakref.ref(extractor)
        del extractor
        assert extractor_ref() is None, "a reference cycle keeps the extractor alive"
    else:
        cams = [maps(door, name, model, x)]
    assert cams[0].shape == (2, 8, 8)
    del model
    assert model_ref() is None, "a reference cycle (or a global) keeps the model alive"


@pytest.mark.usefixtures("no_cycle_collector")
def test_deleted_unclosed_extractor_leaves_no_hooks() -> None:
    left = {}
    for name in METHODS:
        model = small_cnn()
        extractor = torchcam(name, model)
        extractor(0, model(torch.rand(1, 3, 8, 8)))
        del extractor
        if hook_count(model):
            left[name] = hook_count(model)
    assert not left, f"hooks left after the extractor was deleted: {left}"
