"""Guarantee 3, bad inputs: property-based cases for each front door (hypothesis).

Every generated case gives either the correct maps (equal to the canonical call's) or a
``ValueError``/``TypeError`` whose message names the argument and the fix, and leaves the model
unchanged. Each front door runs ``max_examples=30`` per kind of argument in the fast suite (more
than 30 per door) and 300 under the ``heavy`` marker; runs are derandomized, so reproducible.
Known gaps are pinned by the strict ``xfail`` tests at the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from camkit.compat.gradcam import CAMMethod
from reliability.cases import ARGUMENT_FIX, BUILDERS, Case, cases
from reliability.support import DOORS, Wrapped, assert_unchanged, maps, small_cnn, snapshot

FAST = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
HEAVY = settings(FAST, max_examples=300)


def check(case: Case) -> None:
    """Run ``case``: correct maps or a clear error, and the model left as it was."""
    before = snapshot(case.model)
    try:
        got, message = case.run(), None
    except Exception as error:
        if case.error is None or not isinstance(error, case.errors):
            raise AssertionError(f"{case.label}: unexpected {type(error).__name__}: {error}") from error
        got, message = None, str(error)
    if message is not None:
        for pattern in ARGUMENT_FIX[str(case.error)]:
            assert re.search(pattern, message), f"{case.label}: {message!r} does not match {pattern!r}"
    else:
        assert case.error is None, f"{case.label}: expected an error about {case.error}, got maps"
        assert got is not None
        assert got.shape == case.shape, case.label
        assert got.dtype == torch.float32, case.label
        assert torch.isfinite(got).all(), case.label
        assert got.numel() == 0 or (got.amin() >= 0 and got.amax() <= 1), case.label
        if case.reference is not None:
            torch.testing.assert_close(got, case.reference(), rtol=0, atol=case.atol, msg=case.label)
    assert_unchanged(before, case.model)


@pytest.mark.parametrize("kind", sorted(BUILDERS["torchcam"]))
@FAST
@given(data=st.data())
def test_torchcam_door(kind: str, data: st.DataObject) -> None:
    check(data.draw(cases("torchcam", kind)))


@pytest.mark.parametrize("kind", sorted(BUILDERS["gradcam"]))
@FAST
@given(data=st.data())
def test_gradcam_door(kind: str, data: st.DataObject) -> None:
    check(data.draw(cases("gradcam", kind)))


@pytest.mark.parametrize("kind", sorted(BUILDERS["explain"]))
@FAST
@given(data=st.data())
def test_explain(kind: str, data: st.DataObject) -> None:
    check(data.draw(cases("explain", kind)))


@pytest.mark.heavy
@pytest.mark.parametrize("door", sorted(BUILDERS))
@HEAVY
@given(data=st.data())
def test_every_door_many_cases(door: str, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(BUILDERS[door])))
    check(data.draw(cases(door, kind)))


# known gaps (files owned by others): each must start passing when fixed, then move into the fuzz above
def _outcomes(calls: dict[str, Callable[[], Tensor]]) -> dict[str, str]:
    """What each call gives: 'maps', or the exception's type and message."""
    found = {}
    for label, call in calls.items():
        try:
            call()
            found[label] = "maps"
        except Exception as error:
            found[label] = f"{type(error).__name__}: {error}"
    return found


def test_nan_and_inf_inputs_fail_clearly() -> None:
    model = small_cnn()
    nan = torch.rand(2, 3, 8, 8)
    nan[0, :, 2, 2] = float("nan")
    inf = torch.full((2, 3, 8, 8), float("inf"))
    calls = {
        f"{door} {name} {label}": (lambda d=door, n=name, x=x: maps(d, n, model, x))
        for door in DOORS
        for name in ("gradcam", "scorecam")
        for label, x in (("nan", nan), ("inf", inf))
    }
    outcomes = _outcomes(calls)
    assert all(re.search(r"ValueError: .*(NaN|finite)", o) for o in outcomes.values()), outcomes


@pytest.mark.parametrize("door", ["gradcam", "explain"])
def test_empty_batch_gives_empty_maps(door: str) -> None:
    model, empty = small_cnn(), torch.rand(0, 3, 8, 8)
    assert maps(door, "gradcam", model, empty).shape == (0, 8, 8)
    if door == "gradcam":
        assert CAMMethod(model, [model[3]], method="gradcam").compute(empty, None).shape == (0, 8, 8)


def test_input_of_the_wrong_dtype_fails_clearly() -> None:
    model = small_cnn()
    x = torch.rand(2, 3, 8, 8)
    bad = {"uint8": (x * 255).to(torch.uint8), "bool": x > 0.5, "float64": x.double()}
    calls = {
        f"{door} {kind}": (lambda d=door, v=v: maps(d, "gradcam", model, v))
        for door in ("gradcam", "explain")
        for kind, v in bad.items()
    }
    outcomes = _outcomes(calls)
    assert all(re.search(r"TypeError: .*(input_tensor|image).*dtype", o) for o in outcomes.values()), outcomes


def test_input_of_the_wrong_rank_fails_clearly() -> None:
    model = small_cnn()
    bad = {"rank5": torch.rand(1, 2, 3, 8, 8), "rank2": torch.rand(2, 3)}
    calls = {"gradcam rank5": lambda: maps("gradcam", "gradcam", model, bad["rank5"])}
    calls.update({f"explain {kind}": (lambda v=v: maps("explain", "gradcam", model, v)) for kind, v in bad.items()})
    outcomes = _outcomes(calls)
    assert all(re.search(r"(ValueError|TypeError): .*(input_tensor|image).*\(N, C", o) for o in outcomes.values()), (
        outcomes
    )


def test_explain_on_a_model_without_class_scores_fails_clearly() -> None:
    with pytest.raises((ValueError, TypeError), match=r"output"):
        maps("explain", "gradcam", Wrapped("scalar"), torch.rand(2, 3, 8, 8), layer="net.3")


def test_explain_fullgrad_on_an_inference_tensor() -> None:
    model = small_cnn()
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        frozen = x.clone()
    torch.testing.assert_close(maps("explain", "fullgrad", model, frozen), maps("explain", "fullgrad", model, x))


def test_explain_class_idx_string_fails_clearly() -> None:
    with pytest.raises(TypeError, match="class_idx"):
        maps("explain", "gradcam", small_cnn(), torch.rand(2, 3, 8, 8), class_idx="a")  # type: ignore[arg-type]


@pytest.mark.parametrize("door", DOORS)
def test_output_error_points_to_the_documented_wrapper(door: str) -> None:
    with pytest.raises((ValueError, TypeError)) as caught:
        maps(door, "gradcam", Wrapped("dict_other"), torch.rand(2, 3, 8, 8), layer="net.3")
    page = re.search(r"docs/[\w/-]+\.md", str(caught.value))
    assert page is not None, str(caught.value)
    assert "wrap" in (Path(__file__).resolve().parents[2] / page.group(0)).read_text().lower()
