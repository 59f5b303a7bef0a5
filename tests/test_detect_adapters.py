"""camkit.detect on real detector families, random-init from configs (offline): shapes, ranges, state."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from camkit.detect import DetrAdapter, TorchvisionAdapter, YoloAdapter, adapter_for, explain_detections

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics: no network checks
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="camkit-ultralytics-"))  # no ~/.config writes


def _import_ultralytics() -> Any:
    """Ultralytics, or a skip; its import-time changes to process-wide settings are undone."""
    from camkit.detect._adapters import process_state_kept

    with process_state_kept():
        return pytest.importorskip("ultralytics")


IMAGES = [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)), torch.rand(3, 80, 96)]
BOXES = [[[10.0, 10.0, 60.0, 70.0], [40.0, 20.0, 120.0, 90.0]], [[5.0, 5.0, 50.0, 60.0]]]


def model_state(model: nn.Module) -> tuple[Any, ...]:
    flags = tuple(m.training for m in model.modules())
    grads = tuple(p.grad is None for p in model.parameters())
    hooks = tuple((len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules())
    return flags, grads, hooks


def fasterrcnn() -> nn.Module:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    return fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=160
    )


def ssdlite() -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)


def _resnet18_fpn() -> nn.Module:
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=None,
        trainable_layers=5,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )


def retinanet() -> nn.Module:
    from torchvision.models.detection import RetinaNet

    return RetinaNet(_resnet18_fpn(), num_classes=4, min_size=128, max_size=160)


def fcos() -> nn.Module:
    from torchvision.models.detection import FCOS

    return FCOS(_resnet18_fpn(), num_classes=4, min_size=128, max_size=160)


TORCHVISION: dict[str, Callable[[], nn.Module]] = {
    "fasterrcnn": fasterrcnn,
    "ssdlite": ssdlite,
    "retinanet": retinanet,
    "fcos": fcos,
}


@pytest.fixture(scope="module")
def yolo() -> Any:
    ultralytics = _import_ultralytics()
    torch.manual_seed(0)
    return ultralytics.YOLO("yolov8n.yaml")


def detr() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    backbone = transformers.ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage4"],
    )
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=8,
        num_labels=4,
    )
    torch.manual_seed(0)
    return transformers.DetrForObjectDetection(config)


def check_maps(result: Any, methods: list[str]) -> None:
    assert [len(d) for d in result.detections] == [2, 1]
    for name in methods:
        maps = result.maps[name]
        assert [tuple(m.shape) for m in maps] == [(2, 96, 128), (1, 80, 96)]
        for m in maps:
            assert torch.isfinite(m).all()
            assert float(m.min()) >= 0
            assert float(m.max()) <= 1
        if name == "gradcam":  # not all empty (other maps may be: a ReLU of signed random features)
            assert any(float(m.max()) == 1 for m in maps)


@pytest.mark.parametrize("family", sorted(TORCHVISION))
def test_torchvision(family: str) -> None:
    torch.manual_seed(0)
    model = TORCHVISION[family]().train()
    assert isinstance(adapter_for(model), TorchvisionAdapter)
    before = model_state(model)
    owner = getattr(model, "roi_heads", model)
    threshold = owner.score_thresh
    result = explain_detections(model, IMAGES, boxes=BOXES, method=["gradcam", "eigencam"])
    check_maps(result, ["gradcam", "eigencam"])
    assert model_state(model) == before
    assert owner.score_thresh == threshold
    with pytest.raises(ValueError, match="nope"):
        explain_detections(model, IMAGES, boxes=BOXES, target_layer="nope")
    assert model_state(model) == before
    assert owner.score_thresh == threshold


def test_torchvision_no_box_above_threshold() -> None:
    result = explain_detections(fasterrcnn(), IMAGES[:1], score_threshold=0.99)
    assert result.maps["gradcam"][0].shape == (0, 96, 128)
    assert "no detection scored above score_threshold=0.99" in str(result.reasons[0])


def test_torchvision_label_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range: the model's classes are 0 … 3"):
        explain_detections(fasterrcnn(), IMAGES[:1], boxes=BOXES[:1], labels=[[1, 4]])


def test_second_order_method_on_roi_align_names_the_fix() -> None:
    model = fasterrcnn()
    before = model_state(model)
    with pytest.raises(ValueError, match=r"shapleycam needs second derivatives.*--method fast"):
        explain_detections(model, IMAGES[:1], boxes=BOXES[:1], method="shapleycam")
    assert model_state(model) == before


def test_fast_detection_methods_are_first_order_and_deterministic() -> None:
    from camkit import get_method
    from camkit.detect._command import fast_detection_methods

    fast = fast_detection_methods()
    assert "gradcam" in fast
    assert "eigencam" in fast
    assert not {"shapleycam", "randomcam", "drise", "ablationcam"} & set(fast)
    assert all(not get_method(name).needs_hvp and not get_method(name).stochastic for name in fast)


def test_yolo_wrapper_is_never_trained(yolo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("camkit called a method of the YOLO wrapper")

    for name in ("train", "predict", "val", "fuse", "eval", "__call__"):
        monkeypatch.setattr(yolo, name, refuse, raising=False)
    adapter = adapter_for(yolo)
    assert isinstance(adapter, YoloAdapter)
    assert adapter.default_layer() == "model.15"
    inner = yolo.model.train()
    before = model_state(inner)
    result = explain_detections(yolo, IMAGES, boxes=BOXES, method=["gradcam", "eigencam", "layercam", "ablationcam"])
    check_maps(result, ["gradcam", "eigencam", "layercam", "ablationcam"])
    assert model_state(inner) == before
    with pytest.raises(ValueError, match="nope"):
        explain_detections(yolo, IMAGES, boxes=BOXES, target_layer="nope")
    assert model_state(inner) == before


def test_yolo_own_detections_after_nms(yolo: Any) -> None:
    result = explain_detections(yolo.model, IMAGES[:1], score_threshold=1e-4, method="gradcam")
    found = result.detections[0]
    assert 0 < len(found) <= 300
    assert result.maps["gradcam"][0].shape == (len(found), 96, 128)
    assert bool((found.scores[:-1] >= found.scores[1:]).all())


def test_detr() -> None:
    model = detr().train()
    assert isinstance(adapter_for(model), DetrAdapter)
    before = model_state(model)
    methods = ["gradcam", "eigencam", "drise", "ablationcam"]
    result = explain_detections(model, IMAGES, boxes=BOXES, method=methods, num_masks=16)
    check_maps(result, methods)
    assert result.layers["gradcam"] == ["model.input_projection"]
    assert model_state(model) == before
    own = explain_detections(model, IMAGES[:1], score_threshold=0.0, method="gradcam")
    assert len(own.detections[0]) == 8
    assert own.maps["gradcam"][0].shape == (8, 96, 128)


def test_box_score_sum_matches_pytorch_grad_cam_fasterrcnn_target() -> None:
    """box_score="sum" is pytorch-grad-cam's FasterRCNNBoxScoreTarget: the same map within 1e-4.

    What is compared: both libraries' final maps at the input's resolution (320x320: no resize, no
    padding, so both upsample the same 10x10 grid over the same extent). The peer min-max normalises
    twice with an absolute epsilon, ``m / (1e-7 + max m)``: before its cv2 resize and after. Bilinear
    resizing commutes with affine maps, so its map is exactly camkit's ``(up(g) - min) / range`` times
    ``range / (range + 1e-7 c)`` (``c`` the first division's denominator): with a random-init model
    the raw grid ``g`` is ~1e-12, the epsilon is not negligible and the peer's maximum is ~0.995
    instead of 1. Renormalising the peer's map removes exactly that factor, so the renormalised maps
    must agree to float rounding (1e-4), and the peer's map must be camkit's times its own maximum.
    """
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=4, min_size=320, max_size=320
    ).eval()
    model.roi_heads.score_thresh = 0.0  # the peer sees every box, as camkit does during a call
    x = torch.rand(1, 3, 320, 320)  # no resize, no padding: the peer resizes the padded grid
    with torch.no_grad():
        found = model(x)[0]
    boxes, labels = found["boxes"][:1].numpy(), found["labels"][:1].numpy()
    layer = model.backbone.body.get_submodule("16")
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer]) as cam:
        peer = torch.from_numpy(cam(input_tensor=x, targets=[FasterRCNNBoxScoreTarget(labels, boxes)])[0])
    ours = explain_detections(
        model, x[0], boxes=boxes, labels=labels, box_score="sum", target_layer="backbone.body.16"
    ).maps["gradcam"][0][0]
    assert float(ours.min()) == 0
    assert float(ours.max()) == 1
    renormalised = (peer - peer.min()) / (peer.max() - peer.min())
    assert float((renormalised - ours).abs().max()) < 1e-4
    assert float((peer - ours * peer.max()).abs().max()) < 1e-4  # the peer's map is camkit's, scaled by ~0.995
    assert 0.9 < float(peer.max()) <= 1


def test_load_detector_torchvision_with_checkpoint(tmp_path: Any) -> None:
    from camkit.detect import load_detector

    model = load_detector("torchvision:ssdlite320_mobilenet_v3_large", num_classes=3)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    again = load_detector("torchvision:ssdlite320_mobilenet_v3_large", num_classes=3, checkpoint=path)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="does not fit torchvision:ssdlite320_mobilenet_v3_large"):
        load_detector("torchvision:ssdlite320_mobilenet_v3_large", num_classes=5, checkpoint=path)
    with pytest.raises(ValueError, match=r"torchvision has no detector .nope.; available: .*fcos_resnet50_fpn"):
        load_detector("torchvision:nope")
    with pytest.raises(ValueError, match="must be family:name"):
        load_detector("yolov8n.yaml")


def test_load_detector_ultralytics(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from camkit.detect import load_detector

    _import_ultralytics()
    model = load_detector("ultralytics:yolov8n.yaml")
    assert isinstance(adapter_for(model), YoloAdapter)
    with pytest.raises(ValueError, match="builds YOLO from a config"):
        load_detector("ultralytics:yolov8n.pt")
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ImportError, match=r"pip install camkit\[detect\]"):
        load_detector("ultralytics:yolov8n.yaml")
