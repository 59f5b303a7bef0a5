"""Targets read any model output: tensors, tuples, dicts, Hugging Face ModelOutputs, output_key.

1. ``find_output`` / ``logits_of``: the default rules, ``output_key`` (key, index, path) and the
   errors, which name the keys and types found.
2. Every built-in target gives the same values on a tensor and on the same tensor wrapped in a
   tuple, a dict or a ``ModelOutput``, and ``output_key`` picks another head.
3. Regression, multi-label and binary heads on toy models whose answer is known by construction:
   the head reads fixed regions of the input through an identity target layer, so LayerCAM's map
   of a unit is exactly the input on the regions that raise that unit, and zero elsewhere.
4. The batched protocol: the new targets called on re-run rows (Score-CAM) against a float64
   re-derivation of Score-CAM, and through the pytorch-grad-cam front door.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from transformers.modeling_outputs import SequenceClassifierOutput

from camkit.compat.gradcam import LayerCAM as FrontLayerCAM
from camkit.methods import GradCAM, LayerCAM, ScoreCAM
from camkit.targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    ClassProbabilityTarget,
    ClassTarget,
    ImageTextSimilarityTarget,
    MultiLabelTarget,
    RegressionTarget,
    RowwiseTarget,
    SemanticSegmentationTarget,
    SimilarityToConceptTarget,
    find_output,
    logits_of,
)

LOGITS = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
AUX = torch.tensor([[3.0, 1.0], [-2.0, 4.0]])


# --------------------------------------------------------------------------------------------------
# 1. Finding the tensor
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "output",
    [
        LOGITS,
        (LOGITS, AUX),
        [None, LOGITS, AUX],
        {"aux": AUX, "logits": LOGITS},
        SequenceClassifierOutput(logits=LOGITS),
    ],
    ids=["tensor", "tuple", "list-first-tensor", "dict", "ModelOutput"],
)
def test_default_lookup(output: Any) -> None:
    assert logits_of(output) is LOGITS


def test_object_with_logits_attribute() -> None:
    class Out:
        logits = LOGITS

    assert logits_of(Out()) is LOGITS


def test_output_key_forms() -> None:
    nested = {"heads": (LOGITS, {"aux": AUX})}
    assert find_output({"logits": LOGITS, "aux": AUX}, "aux") is AUX
    assert find_output((LOGITS, AUX), 1) is AUX
    assert find_output((LOGITS, AUX), -1) is AUX
    assert find_output(nested, ("heads", 1, "aux")) is AUX
    # a ModelOutput by key, by attribute-style key and by the index of its non-None entries
    hf = SequenceClassifierOutput(loss=None, logits=LOGITS, hidden_states=(AUX,))
    assert find_output(hf, "logits") is LOGITS
    assert find_output(hf, 0) is LOGITS  # loss is None, so entry 0 is logits
    assert find_output(hf, ("hidden_states", 0)) is AUX
    # a tensor output is used as it is, whatever output_key says (already unpacked outputs)
    assert find_output(LOGITS, "aux") is LOGITS


def test_error_names_keys_found() -> None:
    with pytest.raises(TypeError, match=r"'image_embeds' \(tensor\(2, 3\)\).*'text' \(str\).*output_key="):
        logits_of({"image_embeds": LOGITS, "text": "a cat"})
    with pytest.raises(TypeError, match=r"tuple of NoneType, str"):
        logits_of((None, "x"))


def test_error_for_missing_key() -> None:
    with pytest.raises(ValueError, match=r"output_key='aux'.*'logits' \(tensor\(2, 3\)\)"):
        find_output({"logits": LOGITS}, "aux")
    with pytest.raises(ValueError, match=r"output_key=5 .*tuple of tensor\(2, 3\), tensor\(2, 2\)"):
        find_output((LOGITS, AUX), 5)
    with pytest.raises(TypeError, match=r"selects a tuple .*not a tensor"):
        find_output({"heads": (LOGITS,)}, "heads")
    with pytest.raises(TypeError, match=r"output_key must be a str, an int"):
        find_output({"logits": LOGITS}, 1.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# 2. Every built-in target on wrapped outputs
# --------------------------------------------------------------------------------------------------
def _wrapped(t: Tensor) -> list[Any]:
    return [(t, AUX), {"aux": AUX, "logits": t}, SequenceClassifierOutput(logits=t)]


TARGETS_ON_LOGITS = [
    ClassTarget([2, 0]),
    ClassProbabilityTarget(1),
    ClassifierOutputTarget(2),
    ClassifierOutputSoftmaxTarget(0),
    ClassifierOutputReST(1),
    MultiLabelTarget(2),
    RegressionTarget(1, negate=True),
    SimilarityToConceptTarget(torch.tensor([1.0, 0.0, 1.0])),
]


@pytest.mark.parametrize("target", TARGETS_ON_LOGITS, ids=repr)
def test_targets_on_wrapped_outputs(target: Any) -> None:
    expected = target(LOGITS)
    assert expected.shape == (2,)
    for output in _wrapped(LOGITS):
        torch.testing.assert_close(target(output), expected, rtol=0, atol=0)


def test_binary_and_segmentation_on_wrapped_outputs() -> None:
    single = torch.tensor([[0.7], [-0.2]])
    binary = BinaryClassifierOutputTarget(0)
    for output in _wrapped(single):
        torch.testing.assert_close(binary(output), torch.tensor([-0.7, 0.2]))
    seg = torch.arange(16.0).view(1, 2, 2, 4)
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    target = SemanticSegmentationTarget(1, mask)
    for output in (seg, {"out": seg}, SequenceClassifierOutput(logits=seg), (seg,)):
        torch.testing.assert_close(target(output), torch.tensor([8.0 + 11.0]))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (ClassTarget([0, 1], output_key="aux"), [3.0, 4.0]),
        (ClassifierOutputTarget(1, output_key="aux"), [1.0, 4.0]),
        (RegressionTarget(0, output_key="aux"), [3.0, -2.0]),
        (BinaryClassifierOutputTarget(1, output_key=("aux",)), None),
        (ClassifierOutputReST(0, output_key="aux"), None),
    ],
    ids=repr,
)
def test_output_key_picks_other_head(target: Any, expected: list[float] | None) -> None:
    output = {"logits": LOGITS, "aux": AUX}
    if expected is None:  # binary: two values per row is an error; ReST: checked against the formula
        if isinstance(target, BinaryClassifierOutputTarget):
            with pytest.raises(ValueError, match="one logit per sample"):
                target(output)
            return
        expected = (2 * AUX[:, 0] - torch.logsumexp(AUX, dim=1)).tolist()
    torch.testing.assert_close(target(output), torch.tensor(expected))
    assert "output_key=" in repr(target)


def test_output_key_by_index_of_tuple() -> None:
    torch.testing.assert_close(ClassifierOutputTarget(0, output_key=1)((LOGITS, AUX)), AUX[:, 0])


# --------------------------------------------------------------------------------------------------
# 3. Toy heads with a known answer
# --------------------------------------------------------------------------------------------------
SIZE = 8
# Region masks on an 8x8 grid: top-left quadrant, bottom-right quadrant, the left column band.
REGIONS = torch.zeros(3, SIZE, SIZE, dtype=torch.float64)
REGIONS[0, :4, :4] = 1.0
REGIONS[1, 4:, 4:] = 1.0
REGIONS[2, :, :2] = 1.0


class RegionHead(nn.Module):
    """``feat`` (identity, the target layer) then ``y_u = sum_ij W_u(i,j) A(i,j)`` for fixed region weights.

    ``kind`` selects the output: ``"table"`` ``(N, U)``, ``"vector"`` ``(N,)`` (unit 0 only),
    ``"column"`` ``(N, 1)``, ``"dict"`` ``{"logits": ..., "aux": ...}``.
    """

    def __init__(self, weights: Tensor, kind: str = "table") -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.register_buffer("weights", weights)
        self.kind = kind

    def forward(self, x: Tensor) -> Any:
        a = self.feat(x)  # (N, 1, 8, 8)
        y = torch.einsum("nchw,uhw->nu", a, self.weights)
        if self.kind == "vector":
            return y[:, 0]
        if self.kind == "column":
            return y[:, :1]
        if self.kind == "dict":
            return {"logits": -y, "aux": y}
        return y


def _positive_input() -> Tensor:
    generator = torch.Generator().manual_seed(3)
    return 0.5 + torch.rand(2, 1, SIZE, SIZE, generator=generator, dtype=torch.float64)


def _expected_layercam(x: Tensor, weight: Tensor, scale: Tensor | None = None) -> Tensor:
    """LayerCAM by hand, float64: ReLU(sum_k ReLU(g_k) A_k) with g = s * W (s = dtarget/dy > 0), normalized."""
    s = torch.ones(x.shape[0], dtype=x.dtype) if scale is None else scale
    cam = torch.relu(torch.relu(s.view(-1, 1, 1) * weight) * x[:, 0])
    flat = cam.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low)).view_as(cam)


def _layercam(model: nn.Module, x: Tensor, target: Any) -> Tensor:
    with LayerCAM(model, "feat") as extractor:
        out = model(x)
        return extractor(targets=target, scores=out)[0]


@pytest.mark.parametrize("kind", ["table", "dict"])
def test_regression_unit_and_negation(kind: str) -> None:
    """y0 = mean(top-left) - mean(bottom-right): unit 0 points at top-left, its negation at bottom-right."""
    weights = torch.stack([REGIONS[0] - REGIONS[1], REGIONS[2]]) / 16.0
    model = RegionHead(weights, kind).double()
    x = _positive_input()
    key = "aux" if kind == "dict" else None
    up = _layercam(model, x, RegressionTarget(0, output_key=key))
    down = _layercam(model, x, RegressionTarget(0, negate=True, output_key=key))
    band = _layercam(model, x, RegressionTarget(1, output_key=key))
    torch.testing.assert_close(up, _expected_layercam(x, weights[0]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(down, _expected_layercam(x, -weights[0]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(band, _expected_layercam(x, weights[1]), rtol=1e-12, atol=1e-12)
    assert float(up[:, :4, :4].min()) > 0
    assert float(up[:, 4:, 4:].max()) == 0
    assert float(down[:, 4:, 4:].min()) > 0
    assert float(down[:, :4, :4].max()) == 0


def test_regression_on_vector_output() -> None:
    """An (N,) head: RegressionTarget() explains it, and unit > 0 is refused with the fix."""
    weights = torch.stack([REGIONS[1]]) / 16.0
    model = RegionHead(weights, "vector").double()
    x = _positive_input()
    torch.testing.assert_close(_layercam(model, x, RegressionTarget()), _expected_layercam(x, weights[0]))
    out = model(x)
    torch.testing.assert_close(RegressionTarget()(out), out)
    torch.testing.assert_close(RegressionTarget()(out[0]), out[0])  # one sample's 0-d value
    with pytest.raises(ValueError, match=r"unit=0 \(one value per sample\), got shape \(2,\)"):
        RegressionTarget(1)(out)
    with pytest.raises(ValueError, match=r"K > 2.*got shape \(2, 2\)"):
        RegressionTarget(2)(torch.zeros(2, 2))


def test_regression_arguments() -> None:
    with pytest.raises(ValueError, match=r"unit must be an int >= 0, got -1"):
        RegressionTarget(-1)
    with pytest.raises(TypeError, match=r"negate must be True or False, got 'yes'"):
        RegressionTarget(0, negate="yes")  # type: ignore[arg-type]
    assert repr(RegressionTarget(2, True)) == "RegressionTarget(unit=2, negate=True)"


def test_multilabel_label_maps_and_values() -> None:
    """Three independent labels, one per region: each label's map is its own region, scaled by sigma'."""
    weights = torch.stack([REGIONS[0], REGIONS[1], REGIONS[2]]) / 4.0
    model = RegionHead(weights).double()
    x = _positive_input()
    logits = model(x)
    for label in range(3):
        target = MultiLabelTarget(label)
        torch.testing.assert_close(target(logits), 1.0 / (1.0 + torch.exp(-logits[:, label])), rtol=1e-12, atol=0)
        torch.testing.assert_close(target(logits[1]), torch.sigmoid(logits[1, label]))  # one sample's (K,)
        cam = _layercam(model, x, target)
        torch.testing.assert_close(cam, _expected_layercam(x, weights[label]), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"MultiLabelTarget\(3\) needs logits"):
        MultiLabelTarget(3)(logits)


def test_multilabel_gradient_is_sigmoid_derivative() -> None:
    """Grad-CAM weights of a multi-label target equal sigma'(y) times the logit's weights (float64, by hand)."""
    weights = torch.stack([REGIONS[0], REGIONS[1]]) / 4.0
    model = RegionHead(weights).double()
    x = _positive_input()
    with GradCAM(model, "feat") as extractor:
        out = model(x)
        cam = extractor(targets=MultiLabelTarget(1), scores=out, normalized=False)[0]
    p = torch.sigmoid(out[:, 1]).detach()
    slope = p * (1 - p)
    expected = torch.relu(slope.view(-1, 1, 1) * weights[1].mean() * x[:, 0])
    torch.testing.assert_close(cam, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["column", "vector"])
def test_binary_head(kind: str) -> None:
    """One logit y = mean(top-left) - mean(bottom-right): class 1 -> top-left, class 0 -> bottom-right."""
    weights = torch.stack([REGIONS[0] - REGIONS[1]]) / 16.0
    model = RegionHead(weights, kind).double()
    x = _positive_input()
    positive = _layercam(model, x, BinaryClassifierOutputTarget(1))
    negative = _layercam(model, x, BinaryClassifierOutputTarget(0))
    torch.testing.assert_close(positive, _expected_layercam(x, weights[0]))
    torch.testing.assert_close(negative, _expected_layercam(x, -weights[0]))


# --------------------------------------------------------------------------------------------------
# 4. Batched protocol: re-run rows (Score-CAM) and the pytorch-grad-cam front door
# --------------------------------------------------------------------------------------------------
class TwoChannel(nn.Module):
    """Conv(1->2, 1x1, fixed) as the target layer, then a fixed nonlinear head with 3 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(1, 2, 1)
        torch.manual_seed(0)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3))
        with torch.no_grad():
            self.feat.weight.copy_(torch.tensor([[[[1.0]]], [[[-0.7]]]]))
            self.feat.bias.copy_(torch.tensor([0.1, 0.9]))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.feat(x))


def _scorecam_reference(model: nn.Module, x: Tensor, score: Any) -> Tensor:
    """Score-CAM by hand, float64, one sample and one channel at a time (no upsampling: 1x1 layer)."""
    maps = []
    for n in range(x.shape[0]):
        xn = x[n : n + 1]
        with torch.no_grad():
            a = model.feat(xn)[0]
            base = float(score(model(xn)))
            gains = []
            for k in range(a.shape[0]):
                ak = a[k]
                mask = (ak - ak.min()) / (ak.max() - ak.min())
                gains.append(float(score(model(xn * mask))) - base)
        w = torch.softmax(torch.tensor(gains, dtype=torch.float64), 0)
        cam = torch.relu(w[0] * a[0] + w[1] * a[1])
        maps.append((cam - cam.min()) / (cam.max() - cam.min()))
    return torch.stack(maps)


@pytest.mark.parametrize(
    ("target", "by_hand"),
    [
        (RegressionTarget(2, negate=True), lambda y: -y[0, 2]),
        (MultiLabelTarget(1), lambda y: torch.sigmoid(y[0, 1])),
        (BinaryClassifierOutputTarget(0, output_key=None), None),
    ],
    ids=["regression", "multilabel", "binary"],
)
def test_scorecam_rows(target: Any, by_hand: Any) -> None:
    model = TwoChannel().double().eval()
    if by_hand is None:  # binary: a one-logit head
        model.head[-1] = nn.Linear(4, 1).double()
        by_hand = lambda y: -y[0, 0]  # noqa: E731
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with ScoreCAM(model, "feat", batch_size=2) as extractor:  # 6 masked rows in forwards of 2
        model(x)
        cam = extractor(targets=target)[0]
    torch.testing.assert_close(cam, _scorecam_reference(model, x, by_hand), rtol=1e-10, atol=1e-12)


def test_front_door_with_new_targets() -> None:
    """pytorch-grad-cam style: one target per image, each image its own kind of target."""
    weights = torch.stack([REGIONS[0] - REGIONS[1], REGIONS[2]]) / 16.0
    model = RegionHead(weights).double()
    x = _positive_input()
    with FrontLayerCAM(model=model, target_layers=[model.feat]) as cam:
        grayscale = cam(input_tensor=x, targets=[RegressionTarget(0, negate=True), MultiLabelTarget(1)])
    expected = torch.stack(
        [_expected_layercam(x[:1], -weights[0])[0], _expected_layercam(x[1:], weights[1])[0]]
    ).numpy()
    assert grayscale.shape == (2, SIZE, SIZE)
    assert abs(grayscale - expected).max() < 1e-6


def test_rowwise_protocol() -> None:
    """The new Rowwise targets give each row's value from that row alone (any subset of rows)."""
    out = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([0, 0, 1, 1, 1])
    for target in (RegressionTarget(3), MultiLabelTarget(2), RegressionTarget(0, True)):
        assert isinstance(target, RowwiseTarget)
        full = target(out, rows)
        torch.testing.assert_close(target(out[2:4]), full[2:4])
        torch.testing.assert_close(target(out, None), full)
    assert not isinstance(ImageTextSimilarityTarget(torch.ones(4)), RowwiseTarget)  # reads rows


def test_front_door_keeps_output_key() -> None:
    """``ClassifierOutputTarget(c, output_key=...)`` through the front door must keep reading that head."""
    model = RegionHead(torch.stack([REGIONS[0], REGIONS[1]]) / 16.0, "dict").double()
    x = _positive_input()
    with FrontLayerCAM(model=model, target_layers=[model.feat]) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(1, output_key="aux")])
    expected = _expected_layercam(x, REGIONS[1] / 16.0).numpy()
    assert abs(grayscale - expected).max() < 1e-6


def test_torchcam_class_check_uses_output_key() -> None:
    """The class-index check must look at the head the target reads (here: 'aux' has 3 classes, 'logits' 1)."""

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.feat = nn.Identity()
            self.register_buffer("weights", torch.stack([REGIONS[0], REGIONS[1], REGIONS[2]]) / 16.0)

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            y = torch.einsum("nchw,uhw->nu", self.feat(x), self.weights)
            return {"logits": y[:, :1], "aux": y}

    model = TwoHeads().double()
    x = _positive_input()
    cam = _layercam(model, x, ClassTarget(2, output_key="aux"))
    torch.testing.assert_close(cam, _expected_layercam(x, REGIONS[2] / 16.0))
