"""Guarantee 5, threads: two extractors on two models in two threads give the sequential maps.

camkit's hook gate is a ``ContextVar`` (each thread has its own), grad mode is per thread in torch,
and every capture belongs to one extractor, so nothing is shared between the threads. Each thread
runs a different method (the next one in the registry), three times in lockstep.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import Tensor, nn

from reliability.support import DOORS, METHODS, maps, small_cnn

REPEATS = 3


class Pause(nn.Identity):
    """Sleeps 1 ms (the GIL is released), so the two threads' forwards and re-forwards overlap."""

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(0.001)
        return x


def _model(seed: int) -> nn.Sequential:
    return nn.Sequential(*small_cnn(seed=seed), Pause()).eval()


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_two_threads_give_the_sequential_maps(door: str, name: str) -> None:
    names = [name, METHODS[(METHODS.index(name) + 1) % len(METHODS)]]
    models = [_model(1), _model(2)]
    inputs = [torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)]
    classes = [[0, 1], [2, 0, 1]]
    expected = [maps(door, names[i], models[i], inputs[i], class_idx=classes[i]) for i in range(2)]
    results: list[list[Tensor]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            for _ in range(REPEATS):
                start.wait(timeout=60)  # both threads extract at the same time
                results[i].append(maps(door, names[i], models[i], inputs[i], class_idx=classes[i]))
        except BaseException as error:
            errors.append(error)
            start.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for i in range(2):
        assert len(results[i]) == REPEATS
        for got in results[i]:
            torch.testing.assert_close(got, expected[i], rtol=0, atol=0)
