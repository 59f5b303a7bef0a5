"""camkit.engine.auto_batch_size: CPU choice with a fake clock, CUDA choice with a faked free memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from camkit.engine import _batching as batching
from camkit.engine._batching import CANDIDATES, CUDA_CANDIDATES, auto_batch_size, clear_cache


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


class FakeWork:
    """A ``run`` whose call of ``b`` rows advances a fake clock by ``cost(b)`` seconds, logging every call."""

    def __init__(self, cost: Callable[[int], float], first_call_extra: float = 0.0) -> None:
        self.cost = cost
        self.now = 0.0
        self.calls: list[int] = []
        self.first_call_extra = first_call_extra

    def __call__(self, rows: int) -> None:
        self.now += self.cost(rows) + (self.first_call_extra if not self.calls else 0.0)
        self.calls.append(rows)

    def clock(self) -> float:
        return self.now


def choose(work: FakeWork, **kwargs: object) -> int:
    return auto_batch_size(work, kwargs.pop("row_bytes", 0), "cpu", clock=work.clock, **kwargs)  # type: ignore[arg-type]


def test_batch_one_wins_when_larger_batches_cost_more_per_row() -> None:
    # per-row cost grows with the batch (cache pressure): 1 row 10 ms, b rows 10 ms * b * (1 + b / 8)
    work = FakeWork(lambda b: 0.010 * b * (1 + b / 8))
    assert choose(work) == 1


def test_the_fastest_per_row_in_the_middle() -> None:
    per_row = {1: 10.0, 2: 7.0, 4: 5.0, 8: 4.0, 16: 4.5, 32: 5.5, 64: 9.0}
    work = FakeWork(lambda b: per_row[b] * b)
    assert choose(work) == 8


def test_largest_when_per_row_cost_keeps_falling() -> None:
    work = FakeWork(lambda b: 1.0 + 0.01 * b)  # a fixed cost per call: bigger is always better
    assert choose(work) == 64


def test_calls_warm_up_then_repeats_in_increasing_order() -> None:
    work = FakeWork(lambda b: 1.0 + 0.01 * b)
    choose(work, candidates=(4, 1, 2), repeats=3)
    assert work.calls == [1, 1, 1, 1, 2, 2, 2, 4, 4, 4]


def test_slow_first_call_does_not_count() -> None:
    # the first call of all pays 100 s (lazy initialisation): it is the untimed warm-up
    work = FakeWork(lambda b: 0.010 * b * (1 + b / 8), first_call_extra=100.0)
    assert choose(work) == 1


def test_best_of_repeats_ignores_one_slow_call() -> None:
    per_row = {1: 10.0, 2: 6.0, 4: 8.0}
    slow_once = {2: 1}  # the first timed call at batch 2 was preempted

    def cost(b: int) -> float:
        if slow_once.get(b):
            slow_once[b] -= 1
            return per_row[b] * b * 5
        return per_row[b] * b

    work = FakeWork(cost)
    assert choose(work, candidates=(1, 2, 4), repeats=2) == 2


def test_stops_trying_sizes_far_past_the_best() -> None:
    per_row = {1: 1.0, 2: 2.0, 4: 0.1, 8: 0.1, 16: 0.1, 32: 0.1, 64: 0.1}  # 2 is 2x worse than 1: stop
    work = FakeWork(lambda b: per_row[b] * b)
    assert choose(work) == 1
    assert sorted(set(work.calls)) == [1, 2]


def test_cpu_budget_limits_the_candidates() -> None:
    work = FakeWork(lambda b: 1.0)  # fixed cost: the largest allowed size wins
    assert choose(work, row_bytes=100, budget_bytes=1000) == 8  # 16 rows would need 1600 bytes
    assert max(work.calls) == 8


def test_cpu_budget_below_one_row_gives_the_smallest_without_running() -> None:
    work = FakeWork(lambda b: 1.0)
    assert choose(work, row_bytes=100, budget_bytes=50) == 1
    assert work.calls == []


def test_choice_is_cached_per_key() -> None:
    work = FakeWork(lambda b: 0.010 * b * (1 + b / 8))
    assert choose(work, key=("model", (3, 224, 224))) == 1
    measured = len(work.calls)
    assert measured > 0
    # a second call with the same key runs nothing and returns the cached size, even if costs changed
    work.cost = lambda b: 1.0
    assert choose(work, key=("model", (3, 224, 224))) == 1
    assert len(work.calls) == measured
    # another key (e.g. another input shape) measures again
    assert choose(work, key=("model", (3, 112, 112))) == 64
    clear_cache()
    assert choose(work, key=("model", (3, 224, 224))) == 64


def test_without_key_nothing_is_cached() -> None:
    work = FakeWork(lambda b: 1.0)
    choose(work)
    first = len(work.calls)
    choose(work)
    assert len(work.calls) == 2 * first


def test_cpu_defaults() -> None:
    work = FakeWork(lambda b: 1.0)
    choose(work)
    assert max(work.calls) == max(CANDIDATES) == 64


# -- CUDA: the largest size that fits; mem_get_info is faked, nothing runs ----------------------------
def fake_free(monkeypatch: pytest.MonkeyPatch, free: int) -> list[object]:
    asked: list[object] = []

    def mem_get_info(device: object = None) -> tuple[int, int]:
        asked.append(device)
        return free, 4 * free

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    return asked


def no_run(rows: int) -> None:
    raise AssertionError("the CUDA choice must not run anything")


def test_cuda_largest_that_fits_half_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_free(monkeypatch, free=1000 * 2**20)  # 1000 MiB free: budget 500 MiB
    row = 3 * 2**20  # 3 MiB per row: 166 rows fit, so the largest candidate is 128
    assert auto_batch_size(no_run, row, torch.device("cuda", 1)) == 128
    assert asked == [torch.device("cuda", 1)]
    assert auto_batch_size(no_run, 2**20, "cuda") == 256  # 1 MiB rows: 500 fit
    assert auto_batch_size(no_run, 1, "cuda") == max(CUDA_CANDIDATES) == 1024


def test_cuda_explicit_budget_and_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_free(monkeypatch, free=10**12)
    assert auto_batch_size(no_run, 100, "cuda", candidates=(3, 6, 12), budget_bytes=1199) == 6
    assert asked == []  # an explicit budget needs no query


def test_cuda_nothing_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_free(monkeypatch, free=1000)
    assert auto_batch_size(no_run, 10_000, "cuda") == 1


def test_cuda_free_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_free(monkeypatch, free=1000)
    monkeypatch.setattr(batching, "CUDA_FREE_FRACTION", 1.0)
    assert auto_batch_size(no_run, 10, "cuda") == 64  # 100 rows fit the whole free memory


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"candidates": ()}, "candidates must be positive ints"),
        ({"candidates": (0, 4)}, "candidates must be positive ints"),
        ({"candidates": (2.5,)}, "candidates must be positive ints"),
        ({"row_bytes": -1}, "row_bytes must be an int >= 0"),
        ({"budget_bytes": 0}, "budget_bytes must be a positive int or None"),
        ({"repeats": 0}, "repeats must be a positive int"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"row_bytes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        auto_batch_size(lambda b: None, device="cpu", **options)  # type: ignore[arg-type]
