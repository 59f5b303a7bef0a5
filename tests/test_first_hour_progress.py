"""A new user's first hour: progress with rate and ETA, compare's keys, the automatic-layer message once."""

from __future__ import annotations

import gc
import io
import logging
import re
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

import camkit
from camkit import metrics
from camkit.engine import Progress, _layers, resolve_layers
from camkit.engine._progress import _duration
from camkit.methods import GradCAM
from conftest import tiny_cnn


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _bar(stream: io.StringIO, clock: FakeClock, total: int = 1281, **kwargs: Any) -> Progress:
    return Progress(total, "images", stream=stream, clock=clock, **kwargs)


@pytest.fixture(autouse=True)
def _no_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


# --------------------------------------------------------------------------------------------------
# Progress: the three places it is shown


def test_terminal_line_has_rate_and_eta_and_is_redrawn() -> None:
    out, clock = Terminal(), FakeClock()
    bar = _bar(out, clock)
    assert bar.mode == "terminal"
    clock.advance(120 / 35.2)
    bar.update(120)
    assert out.getvalue() == "\rimages: 120/1,281 (9%) 35.2/s, ETA 0:33"
    clock.advance(0.1)  # within the redraw interval: nothing new
    bar.update(1)
    assert out.getvalue() == "\rimages: 120/1,281 (9%) 35.2/s, ETA 0:33"
    clock.advance(1161 / 35.2)
    bar.update(1160)
    bar.close()
    drawn = out.getvalue().split("\r")
    assert re.fullmatch(r"images: 1,281/1,281 \(100%\) 35\.\d/s, done in 0:36 *\n", drawn[-1])
    assert out.getvalue().count("\n") == 1


def test_terminal_redraw_clears_a_longer_previous_line() -> None:
    out, clock = Terminal(), FakeClock()
    bar = _bar(out, clock, total=10, enabled=True, interval=0)
    clock.advance(2000)
    bar.update(1)  # a slow first unit: a long ETA
    clock.advance(1)
    bar.update(8)
    first, second = out.getvalue().split("\r")[1:]
    assert first == "images: 1/10 (10%) 2,000.0 s each, ETA 5:00:00"
    shorter = "images: 9/10 (90%) 222.3 s each, ETA 3:42"
    assert second == shorter + " " * (len(first) - len(shorter))  # what is left of the first is blanked


def test_terminal_short_run_stays_silent() -> None:
    out, clock = Terminal(), FakeClock()
    bar = _bar(out, clock, total=5)
    for _ in range(5):
        clock.advance(Progress.TERMINAL_DELAY / 10)
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_log_short_run_stays_silent() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = _bar(out, clock, total=10)
    assert bar.mode == "lines"
    for _ in range(10):
        clock.advance(Progress.LINE_DELAY / 20)
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_log_long_run_writes_throttled_plain_lines_and_a_final_one() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = _bar(out, clock, total=100)
    for _ in range(100):  # 1 s per unit: 100 s in all
        clock.advance(1)
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the first after LINE_DELAY (5 s), then one per LINE_INTERVAL (10 s), then the final line
    assert lines[0] == "images: 5/100 (5%) 1.0/s, ETA 1:35"
    assert lines[1] == "images: 15/100 (15%) 1.0/s, ETA 1:25"
    assert len(lines) == 11
    assert lines[-1] == "images: 100/100 (100%) 1.0/s, done in 1:40"


def test_log_final_line_when_the_work_lasted_between_sparse_updates() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = _bar(out, clock, total=2)
    clock.advance(3)
    bar.update(1)  # 3 s: still silent
    assert out.getvalue() == ""
    clock.advance(5)
    bar.update(1)  # 8 s: the work lasted, its final line
    bar.close()
    assert out.getvalue() == "images: 2/2 (100%) 4.0 s each, done in 0:08\n"


def test_log_run_stopped_early_says_so() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = _bar(out, clock, total=10)
    clock.advance(6)
    bar.update(3)
    clock.advance(1)
    bar.close()
    bar.close()  # twice: nothing more
    assert out.getvalue().splitlines() == [
        "images: 3/10 (30%) 2.0 s each, ETA 0:14",
        "images: 3/10 (30%) 2.3 s each, stopped after 0:07",
    ]


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_notebook_writes_throttled_lines(stream: type[io.StringIO], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    out, clock = stream(), FakeClock()
    bar = _bar(out, clock, total=30)
    assert bar.mode == "lines"
    for _ in range(30):
        clock.advance(1)
        bar.update(1)
    bar.close()
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines() == [
        "images: 5/30 (16%) 1.0/s, ETA 0:25",
        "images: 15/30 (50%) 1.0/s, ETA 0:15",
        "images: 25/30 (83%) 1.0/s, ETA 0:05",
        "images: 30/30 (100%) 1.0/s, done in 0:30",
    ]


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_disabled_is_silent_and_enabled_always_shows(stream: type[io.StringIO]) -> None:
    out, clock = stream(), FakeClock()
    bar = _bar(out, clock, total=10, enabled=False)
    for _ in range(10):
        clock.advance(100)
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""
    bar = _bar(out, clock, total=2, enabled=True)
    bar.update(1)  # no time has passed: shown, without a rate
    assert out.getvalue().strip() == "images: 1/2 (50%)"
    clock.advance(1)
    bar.update(1)
    bar.close()
    assert out.getvalue().replace("\r", "\n").splitlines()[-1].strip() == "images: 2/2 (100%) 2.0/s, done in 0:01"


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    bar = Progress(1, "masks", enabled=True, clock=clock)
    clock.advance(2)
    bar.update(1)
    bar.close()
    assert capsys.readouterr().err == "masks: 1/1 (100%) 2.0 s each, done in 0:02\n"


def test_durations() -> None:
    assert [_duration(s) for s in (0, 33.4, 59.6, 3599, 3725, float("inf"))] == [
        "0:00",
        "0:33",
        "1:00",
        "59:59",
        "1:02:05",
        "?",
    ]


# --------------------------------------------------------------------------------------------------
# Progress in its callers: metrics and perturbation methods


@pytest.fixture
def log_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain lines without the quiet start and the throttle (as if every forward took long)."""
    monkeypatch.setattr(Progress, "LINE_DELAY", 0.0)
    monkeypatch.setattr(Progress, "LINE_INTERVAL", 0.0)


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


@pytest.mark.usefixtures("log_at_once")
@pytest.mark.parametrize(("metric", "label"), [(metrics.deletion, "deletion"), (metrics.insertion, "insertion")])
def test_deletion_and_insertion_count_their_inputs(metric: Any, label: str, capsys: pytest.CaptureFixture[str]) -> None:
    x, maps = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4)
    quiet = metric(_classifier(), x, maps, steps=4, batch_size=3, progress=False)
    assert capsys.readouterr().err == ""
    shown = metric(_classifier(), x, maps, steps=4, batch_size=3)  # None: shown as the work lasts
    counts = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    assert counts == [f"{label} inputs: 3/8", f"{label} inputs: 6/8", f"{label} inputs: 8/8"]
    torch.testing.assert_close(shown.curve, quiet.curve, rtol=0, atol=0)


@pytest.mark.usefixtures("log_at_once")
def test_road_counts_its_imputed_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    x, maps = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4)
    metrics.road(_classifier(), x, maps, percentiles=[25, 50], batch_size=3, noise=0.0)
    assert capsys.readouterr().err.splitlines()[-1].startswith("ROAD imputed inputs: 4/4 (100%)")
    metrics.road_combined(_classifier(), x, maps, percentiles=[25, 50], noise=0.0, progress=True)
    assert capsys.readouterr().err.splitlines()[-1].startswith("ROAD imputed inputs: 8/8 (100%)")
    metrics.road_at("morf", 50, x, maps, None, _classifier(), False, False, 0.0, None, 4, progress=False)
    metrics.road(_classifier(), x, maps, percentiles=[25], noise=0.0, progress=False)
    assert capsys.readouterr().err == ""


def test_metrics_stay_silent_for_short_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Progress, "LINE_DELAY", 1e9)  # "short": the work never reaches the quiet start
    x, maps = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4)
    metrics.deletion(_classifier(), x, maps, steps=4, batch_size=1)
    metrics.road(_classifier(), x, maps, percentiles=[25, 50], batch_size=1)
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("log_at_once")
def test_perturbation_methods_log_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    with camkit.methods.ScoreCAM(model, "3", batch_size=1) as extractor:  # 16 forwards
        model(x)
        extractor(0)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("masked inputs: 16/16 (100%)")


# --------------------------------------------------------------------------------------------------
# compare: the keys are the names passed


def test_compare_keys_are_the_names_passed_in_order() -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    maps = camkit.compare(model, x, ["LayerCAM", "gradcam", "GradCAMpp"], "3", class_idx=1)
    assert list(maps) == ["LayerCAM", "gradcam", "GradCAMpp"]
    alone = camkit.compare(model, x, ["gradcampp"], "3", class_idx=1)
    torch.testing.assert_close(maps["GradCAMpp"][0], alone["gradcampp"][0], rtol=0, atol=0)


def test_compare_two_spellings_of_one_method_are_computed_once() -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    forwards: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: forwards.append(args[0].shape[0]))
    try:
        maps = camkit.compare(model, x, ["GradCAMpp", "gradcampp", "FullGrad", "fullgrad", "gradcampp"], "3")
    finally:
        handle.remove()
    assert list(maps) == ["GradCAMpp", "gradcampp", "FullGrad", "fullgrad"]
    assert forwards == [2, 2]  # one shared pass, one FullGrad pass
    assert maps["GradCAMpp"][0] is maps["gradcampp"][0]
    assert maps["FullGrad"][0] is maps["fullgrad"][0]


# --------------------------------------------------------------------------------------------------
# the automatic layer: said once per model and layer


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if "no target_layer given" in r.getMessage()]


def test_automatic_layer_is_said_once_per_model(caplog: pytest.LogCaptureFixture) -> None:
    first, second = tiny_cnn().eval(), tiny_cnn().eval()
    with caplog.at_level(logging.WARNING, logger="camkit"):
        for model in (first, first, second, first):
            assert resolve_layers(model, None, (3, 8, 8)) == ["4"]
        with GradCAM(first, input_shape=(3, 8, 8)) as extractor:  # an extractor per batch of a run: not said again
            extractor(0, first(torch.rand(1, 3, 8, 8)))
    said = _said(caplog)
    assert len(said) == 2
    assert all(level == logging.WARNING for level, _ in said)
    assert said[0][1].startswith("no target_layer given: using '4' (output shape (1, 8, 8, 8))")


def test_automatic_layer_said_again_for_another_layer_and_after_forgetting(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_cnn().eval()
    with caplog.at_level(logging.WARNING, logger="camkit"):
        resolve_layers(model, None, (3, 8, 8))
        _layers._announce(model, "2", "no target_layer given: using %r", "2")  # another layer of the same model
        _layers._announce(model, "2", "no target_layer given: using %r", "2")
        _layers.forget_announcements()
        resolve_layers(model, None, (3, 8, 8))
    assert [message.split(" (")[0] for _, message in _said(caplog)] == [
        "no target_layer given: using '4'",
        "no target_layer given: using '2'",
        "no target_layer given: using '4'",
    ]


def test_announcements_do_not_keep_models_alive() -> None:
    model = tiny_cnn().eval()
    resolve_layers(model, None, (3, 8, 8))
    assert model in _layers._ANNOUNCED
    before = len(_layers._ANNOUNCED)
    del model
    gc.collect()
    assert len(_layers._ANNOUNCED) == before - 1
