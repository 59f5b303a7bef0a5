"""Errors users hit get a ValueError/TypeError whose message names the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from camkit.methods import CAM, GradCAM, ScoreCAM
from camkit.targets import ClassTarget
from conftest import make_extractor, tiny_cnn


@pytest.fixture
def model() -> nn.Module:
    return tiny_cnn().eval()


def test_unknown_layer_lists_candidates(model: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"'features\.3'.*did you mean.*'3'"):
        GradCAM(model, "features.3")


def test_module_not_in_model(model: nn.Module) -> None:
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(model, nn.Conv2d(3, 3, 1))


def test_wrong_layer_type(model: nn.Module) -> None:
    with pytest.raises(TypeError, match="target_layer must be"):
        GradCAM(model, 3)  # type: ignore[arg-type]


def test_non_spatial_layer(model: nn.Module) -> None:
    with GradCAM(model, "8") as extractor:
        scores = model(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="no spatial dims"):
            extractor(0, scores)


def test_class_index_out_of_range(model: nn.Module) -> None:
    with GradCAM(model, "3") as extractor:
        scores = model(torch.rand(2, 3, 8, 8))
        with pytest.raises(ValueError, match=r"valid indices are 0\.\.4"):
            extractor(5, scores)
        with pytest.raises(ValueError, match=">= 0"):
            extractor(-1, scores)


def test_one_class_target_reads_a_column() -> None:
    scores = torch.arange(10.0).view(2, 5)
    torch.testing.assert_close(ClassTarget(3)(scores), scores[:, 3])
    torch.testing.assert_close(ClassTarget(np.int64(3))(scores), ClassTarget([3, 3])(scores))
    with pytest.raises(ValueError, match=r"valid indices are 0\.\.4"):
        ClassTarget(5)(scores)
    with pytest.raises(TypeError, match="class_idx must be"):
        ClassTarget(True)


def test_class_list_wrong_length(model: nn.Module) -> None:
    with GradCAM(model, "3") as extractor:
        scores = model(torch.rand(2, 3, 8, 8))
        with pytest.raises(ValueError, match="one class index per sample"):
            extractor([0, 1, 2], scores)


def test_class_idx_type(model: nn.Module) -> None:
    with GradCAM(model, "3") as extractor:
        scores = model(torch.rand(1, 3, 8, 8))
        with pytest.raises(TypeError, match="class_idx must be"):
            extractor(1.5, scores)  # type: ignore[arg-type]


def test_scores_missing(model: nn.Module) -> None:
    with GradCAM(model, "3") as extractor:
        model(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match=r"scores=model\(x\)"):
            extractor(0)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_scores_without_graph(model: nn.Module, context: type) -> None:
    with GradCAM(model, "3") as extractor:
        with context():
            scores = model(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match=r"torch\.no_grad\(\).*gradient-free method"):
            extractor(0, scores)


def test_inference_mode_is_fine_for_gradient_free_methods(model: nn.Module) -> None:
    with CAM(model, "3") as extractor:
        with torch.inference_mode():
            model(torch.rand(1, 3, 8, 8))
        assert extractor(0)[0].shape == (1, 8, 8)


def test_unbatched_input(model: nn.Module) -> None:
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(0))
    with GradCAM(conv, "0") as extractor:
        scores = conv(torch.rand(3, 8, 8))  # no batch dim: scores are 1-D
        with pytest.raises(ValueError, match=r"add a batch dimension"):
            extractor(0, scores)


def test_batch_mismatch(model: nn.Module) -> None:
    with GradCAM(model, "3") as extractor:
        model(torch.rand(2, 3, 8, 8))
        extractor.disable_hooks()
        other = model(torch.rand(3, 3, 8, 8))
        with pytest.raises(ValueError, match="batch"):
            extractor(0, other)


def test_no_forward_yet(model: nn.Module) -> None:
    with ScoreCAM(model, "3") as extractor, pytest.raises(ValueError, match="run the forward"):
        extractor(0)


def test_second_call_without_retain_graph(model: nn.Module) -> None:
    with GradCAM(model, "3") as extractor:
        scores = model(torch.rand(1, 3, 8, 8))
        extractor(0, scores)
        with pytest.raises(ValueError, match="retain_graph=True"):
            extractor(1, scores)


def test_retain_graph_allows_two_calls(model: nn.Module) -> None:
    with GradCAM(model, "3") as extractor:
        scores = model(torch.rand(1, 3, 8, 8))
        first = extractor(0, scores, retain_graph=True)
        second = extractor(0, scores)
        torch.testing.assert_close(first[0], second[0])


def test_cam_needs_single_linear() -> None:
    two_heads = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2)
    )
    with pytest.raises(ValueError, match="pass fc_layer"):
        CAM(two_heads, "0")


def test_cam_head_choice_logged_once_per_model(caplog: pytest.LogCaptureFixture) -> None:
    # a dataset run builds an extractor per batch: the automatic head choice is said once per model
    first, second = tiny_cnn().eval(), tiny_cnn().eval()
    with caplog.at_level("WARNING", logger="camkit"):
        for net in (first, first, second, first):
            with CAM(net, "3") as extractor:
                extractor(0, net(torch.rand(1, 3, 8, 8)))
    said = [r.getMessage() for r in caplog.records if "no fc_layer given" in r.getMessage()]
    assert said == ["no fc_layer given: using '8' (said once per model)"] * 2


def test_unknown_method(model: nn.Module) -> None:
    with pytest.raises(ValueError, match="choose one of"):
        make_extractor("nosuchcam", model, "3")


def test_both_class_idx_and_targets(model: nn.Module) -> None:

    with GradCAM(model, "3") as extractor:
        scores = model(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="exactly one of"):
            extractor(0, scores, targets=ClassTarget(0))


def test_tuple_output_layer() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.pair(x)[0])

    net = Net()
    with GradCAM(net, "pair") as extractor:
        scores = net(torch.rand(1, 3, 4, 4))
        with pytest.raises(ValueError, match="returns a tuple, not a tensor"):
            extractor(0, scores)
