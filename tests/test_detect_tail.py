"""Ablation-CAM's tail-only re-forward: the same maps as re-running the whole detector, and the fallbacks.

Each case explains the same boxes twice, ``reforward="fast"`` (the detector before the target layer
once, then only what follows it at batch ``batch_size``) and ``reforward="full"`` (the whole
detector per chunk, the layer's output replaced through the engine's capture), on random-init
detectors; ``max_channels`` keeps the number of ablated channels (and forwards) small.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

from camkit.detect import adapter_for, explain_detections
from camkit.detect._ablation import Levels, _Plan
from camkit.detect._tail import expand_batch, tail_run
from test_detect_adapters import IMAGES, TORCHVISION, _import_ultralytics, model_state

BOXES = [[10.0, 10.0, 60.0, 70.0], [40.0, 20.0, 120.0, 90.0]]


def _both(model: Any, layer: str, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    maps = []
    for mode in ("fast", "full"):
        result = explain_detections(
            model, IMAGES[0], boxes=BOXES, method="ablationcam", target_layer=layer, reforward=mode, **options
        )
        maps.append(result.maps["ablationcam"][0])
    return maps[0], maps[1]


def _paths(model: Any, layer: str, reforward: str = "auto", **options: Any) -> str | None:
    """Which path the plan took for one image (``"fast"`` or ``"full"``)."""
    adapter = adapter_for(model)
    with adapter.session():
        (image,) = adapter.to_input(IMAGES[:1])
        result = explain_detections(model, image, boxes=BOXES, method="eigencam")
        found = result.detections[0]
        plan = _Plan(adapter, layer, 0.0, 4, "product", 0.5, options.get("max_channels", 4), reforward)
        plan.image(image, found)
    return plan.path


def fasterrcnn_r50() -> nn.Module:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=160)


@pytest.mark.parametrize(
    ("family", "layer"),
    [
        ("fasterrcnn", "backbone"),
        ("fasterrcnn", "backbone.body.16"),
        ("retinanet", "backbone"),
        ("fcos", "backbone.fpn"),
        ("ssdlite", "backbone"),
    ],
)
def test_torchvision_tail_equals_full(family: str, layer: str) -> None:
    torch.manual_seed(0)
    model = TORCHVISION[family]().train()
    before = model_state(model)
    fast, full = _both(model, layer, max_channels=6, batch_size=4)
    assert fast.shape == (2, 96, 128)
    assert float((fast - full).abs().max()) <= 1e-5
    if family in ("fasterrcnn", "retinanet"):  # random-init FCOS and SSDlite scores do not move with these channels
        assert float(fast.max()) == 1.0
    assert model_state(model) == before
    assert _paths(model, layer) == "fast"


@pytest.mark.parametrize("layer", ["backbone", "backbone.body.layer4"])
def test_fasterrcnn_resnet50_tail_equals_full(layer: str) -> None:
    """The benchmark's model and layer (pytorch-grad-cam's tutorial uses ``model.backbone``), and the last stage."""
    torch.manual_seed(0)
    model = fasterrcnn_r50()
    fast, full = _both(model, layer, max_channels=5, batch_size=3)
    assert float((fast - full).abs().max()) <= 1e-5
    if layer != "backbone":  # the top-variance FPN channels happen to leave these boxes' scores as they are
        assert float(fast.max()) == 1.0


@pytest.mark.parametrize("layer", ["model.15", "model.12"])
def test_yolo_tail_equals_full(layer: str) -> None:
    ultralytics = _import_ultralytics()
    torch.manual_seed(0)
    yolo = ultralytics.YOLO("yolov8n.yaml")
    inner = yolo.model.train()
    before = model_state(inner)
    fast, full = _both(yolo, layer, max_channels=8, batch_size=3)
    assert float((fast - full).abs().max()) <= 1e-5
    assert float(fast.max()) == 1.0
    assert model_state(inner) == before
    assert _paths(yolo, layer) == "fast"


def test_unknown_tail_falls_back_to_full_forwards(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = TORCHVISION["fasterrcnn"]()
    layer = "backbone.body.16.0"  # inside a stage: camkit does not cut the backbone there
    adapter = adapter_for(model)
    with adapter.session(), torch.inference_mode():
        assert tail_run(adapter, layer, IMAGES[0]) is None
    with caplog.at_level(logging.INFO, logger="camkit"):
        assert _paths(model, layer) == "full"
    assert "no tail-only re-forward" in caplog.text
    with pytest.raises(RuntimeError, match="no tail-only re-forward is known"):
        _paths(model, layer, reforward="fast")


def test_a_tail_that_disagrees_with_the_full_forward_is_dropped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = TORCHVISION["fasterrcnn"]()
    import camkit.detect._ablation as ablation

    def wrong(adapter: Any, name: str, image: torch.Tensor) -> Any:
        run = tail_run(adapter, name, image)
        assert run is not None
        inner = run.tail

        def noisy(replaced: Any) -> Any:  # a tail whose scores are off by 1% (a wrong cut would be worse)
            return [{**found, "scores": found["scores"] * 0.99} for found in inner(replaced)]

        run.tail = noisy
        return run

    monkeypatch.setattr(ablation, "tail_run", wrong)
    with caplog.at_level(logging.INFO, logger="camkit"):
        assert _paths(model, "backbone") == "full"
    assert "tail-only re-forward does not apply" in caplog.text
    assert "max difference" in caplog.text


def test_levels_number_channels_level_by_level_and_expand_without_copies() -> None:
    levels = Levels({"0": torch.ones(1, 2, 4, 4), "pool": torch.ones(1, 3, 2, 2)}, "backbone")
    assert levels.channels == 5
    out = levels.ablated([1, 3], 0.0)
    assert out["0"].shape == (2, 2, 4, 4)
    assert float(out["0"][0, 1].abs().sum()) == 0
    assert float(out["0"][1].sum()) == 32
    assert float(out["pool"][1, 1].abs().sum()) == 0
    assert float(out["pool"][0].sum()) == 12
    untouched = levels.ablated([0, 1], 0.0)["pool"]
    assert untouched.shape[0] == 2
    assert untouched.stride(0) == 0
    assert levels.ablated([0, 1], 0.0, copy=True)["pool"].stride(0) != 0
    grid = levels.grid(torch.ones(5, 1))
    assert grid.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="a dict of them"):
        Levels((torch.ones(1, 2, 4, 4),), "x")
    assert [t.shape[0] for t in expand_batch({"a": torch.zeros(1, 2), "b": torch.zeros(3, 2)}, 3).values()] == [3, 3]


def test_bad_reforward_and_max_channels() -> None:
    model = TORCHVISION["fasterrcnn"]()
    with pytest.raises(ValueError, match="reforward must be one of"):
        explain_detections(model, IMAGES[0], boxes=BOXES, method="ablationcam", reforward="sometimes")
    with pytest.raises(ValueError, match="max_channels must be a positive int"):
        explain_detections(model, IMAGES[0], boxes=BOXES, method="ablationcam", max_channels=0)


def test_drise_batch_is_chosen_from_memory_and_masks_do_not_depend_on_it() -> None:
    from camkit.detect._drise import CPU_BUDGET_BYTES, drise_batch_size, forward_bytes

    model = TORCHVISION["ssdlite"]().eval()
    adapter = adapter_for(model)
    (image,) = adapter.to_input(IMAGES[:1])

    def run(images: list[torch.Tensor]) -> Any:
        return adapter.run(images)[0]

    before = model_state(model)
    row = forward_bytes(run, image)
    assert row > image.numel() * 4
    assert model_state(model) == before  # the measuring hook is gone
    size = drise_batch_size(run, image, 1000)
    assert size * row <= CPU_BUDGET_BYTES or size == 1
    assert drise_batch_size(run, image, 1000, budget_bytes=row * 5) == 4  # the largest candidate that fits
    assert drise_batch_size(run, image, 3, budget_bytes=row * 100) == 3  # never more than the masks

    def maps(batch_size: int | None) -> torch.Tensor:
        result = explain_detections(
            model, IMAGES[0], boxes=BOXES, method="drise", num_masks=40, batch_size=batch_size,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        return result.maps["drise"][0]

    torch.testing.assert_close(maps(None), maps(7), atol=1e-5, rtol=0)
