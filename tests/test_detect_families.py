"""More detector families through explain_detections, random-init and offline: Mask R-CNN, Deformable DETR,
RT-DETR, YOLOv10 and YOLO26 (end-to-end heads); pixel masks and padding of mixed-size batches."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from camkit.detect import DetrAdapter, TorchvisionAdapter, YoloAdapter, adapter_for, explain_detections
from test_detect_adapters import BOXES, IMAGES, _import_ultralytics, check_maps, detr, model_state


def _resnet(stages: list[str]) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic", out_features=stages
    )


def deformable_detr() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.DeformableDetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=_resnet(["stage2", "stage3", "stage4"]),
        num_feature_levels=3,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # transformers ties the box heads of the decoder layers: it needs two
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=8,
        num_labels=4,
    )
    torch.manual_seed(0)
    return transformers.DeformableDetrForObjectDetection(config)


def rt_detr() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.RTDetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=_resnet(["stage2", "stage3", "stage4"]),
        encoder_in_channels=[32, 64, 128],
        d_model=32,
        encoder_hidden_dim=32,
        encoder_layers=1,
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_in_channels=[32, 32, 32],
        decoder_layers=1,
        decoder_ffn_dim=32,
        decoder_attention_heads=2,
        decoder_n_points=2,
        num_queries=50,  # enough anchors that every given box overlaps one
        num_denoising=0,
        num_labels=4,
    )
    torch.manual_seed(0)
    return transformers.RTDetrForObjectDetection(config)


def test_mask_rcnn() -> None:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4, min_size=96, max_size=128)
    model.train()
    assert isinstance(adapter_for(model), TorchvisionAdapter)
    assert adapter_for(model).default_layer() == "backbone.body.layer4"
    before = model_state(model)
    threshold = model.roi_heads.score_thresh
    result = explain_detections(model, IMAGES, boxes=BOXES, method=["gradcam", "eigencam"])
    check_maps(result, ["gradcam", "eigencam"])
    assert result.layers["gradcam"] == ["backbone.body.layer4"]
    assert model_state(model) == before
    assert model.roi_heads.score_thresh == threshold


# RT-DETR's random-init queries start as small anchor boxes: a given box may overlap none (a warned, empty map)
@pytest.mark.filterwarnings("ignore:image .* match no prediction:UserWarning")
@pytest.mark.parametrize("build", [deformable_detr, rt_detr], ids=["deformable_detr", "rt_detr"])
def test_sigmoid_detr_family(build: Any) -> None:
    model = build().train()
    adapter = adapter_for(model)
    assert isinstance(adapter, DetrAdapter)
    assert adapter.default_layer() == "model.backbone.model.encoder.stages.3"
    before = model_state(model)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    methods = ["gradcam", "eigencam", "drise"]
    result = explain_detections(model, IMAGES, boxes=BOXES, method=methods, num_masks=8)
    check_maps(result, methods)
    assert model_state(model) == before
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name]), name
    own = explain_detections(model, IMAGES[:1], score_threshold=0.0, max_boxes=3, method="gradcam")
    found = own.detections[0]
    assert len(found) == 3
    assert bool((found.scores > 0).all())
    assert bool((found.scores < 1).all())


class _Spy:
    """Records the keyword arguments of the model's calls."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[dict[str, Any]] = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, _module: nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})


SQUARE = [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(1)), torch.rand(3, 64, 96)]
SQUARE_BOXES = [[[10.0, 10.0, 60.0, 70.0]], [[5.0, 5.0, 50.0, 60.0]]]


@pytest.mark.parametrize("build", [detr, deformable_detr], ids=["detr", "deformable_detr"])
def test_mixed_sizes_get_a_pixel_mask_and_leave_the_largest_image_alone(build: Any) -> None:
    # LayerCAM sums positive terms; Grad-CAM of these random-init models is a sum of terms that cancel to
    # ~1e-11 (rounding noise, which min-max scaling blows up), so it is compared on DETR only
    methods = ["layercam", "eigencam", *(["gradcam"] if build is detr else [])]
    model = build()
    spy = _Spy(model)
    mixed = explain_detections(model, SQUARE, boxes=SQUARE_BOXES, labels=[[1], [2]], method=methods)
    spy.handle.remove()
    mask = spy.calls[0]["pixel_mask"]
    assert tuple(mask.shape) == (2, 96, 128)
    assert bool(mask[0].eq(1).all())
    assert bool(mask[1, :64, :96].eq(1).all())
    assert int(mask[1].sum()) == 64 * 96
    values = spy.calls[0]["pixel_values"]
    assert float(values[1, :, 64:].abs().max()) == 0
    assert float(values[1, :, :, 96:].abs().max()) == 0
    alone = explain_detections(model, SQUARE[:1], boxes=SQUARE_BOXES[:1], labels=[[1]], method=methods)
    for name in methods:
        torch.testing.assert_close(mixed.maps[name][0], alone.maps[name][0], atol=1e-4, rtol=0)
        assert tuple(mixed.maps[name][1].shape) == (1, 64, 96)


def test_rt_detr_ignores_the_mask_so_its_boxes_span_the_padded_batch() -> None:
    """RT-DETR's anchors cover the whole padded tensor: a box of a small image in a mixed batch is where the
    same image, padded by hand with the mean colour and run alone, has it (in pixels)."""
    model = rt_detr().eval()
    adapter = adapter_for(model)
    assert isinstance(adapter, DetrAdapter)
    assert adapter.takes_mask
    assert adapter.padded_boxes
    big, small = SQUARE
    by_hand = torch.tensor(adapter.mean)[:, None, None].expand(3, 96, 128).clone()
    by_hand[:, :64, :96] = small
    with torch.no_grad():
        output, frames = adapter.run([big, small])
        mixed = adapter.decode(output, frames)[1]
        output, frames = adapter.run([by_hand])
        padded = adapter.decode(output, frames)[0]
    torch.testing.assert_close(mixed.boxes, padded.boxes, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(mixed.probs, padded.probs, atol=1e-4, rtol=1e-4)
    assert not detr_adapter_padded_boxes()


def detr_adapter_padded_boxes() -> bool:
    """DETR's boxes are relative to each image's own size (its position encoding follows the mask)."""
    adapter = adapter_for(detr())
    assert isinstance(adapter, DetrAdapter)
    return adapter.padded_boxes


@pytest.mark.parametrize("config", ["yolov10n.yaml", "yolo26n.yaml"])
def test_yolo_end_to_end_heads(config: str) -> None:
    """YOLOv10 and YOLO26 heads carry a one-to-one branch; camkit reads the branch the head's ``end2end`` selects
    (as the model's own inference does): one-to-one NMS-free, or one-to-many with NMS."""
    ultralytics = _import_ultralytics()
    torch.manual_seed(0)
    try:
        yolo = ultralytics.YOLO(config)
    except (FileNotFoundError, KeyError) as error:  # an Ultralytics release without this config
        pytest.skip(f"{config}: {error}")
    adapter = adapter_for(yolo)
    assert isinstance(adapter, YoloAdapter)
    head = adapter._head
    assert getattr(head, "one2one_cv2", None) is not None
    inner = yolo.model.train()
    before = model_state(inner)
    result = explain_detections(yolo, IMAGES, boxes=BOXES, method=["gradcam", "eigencam"])
    check_maps(result, ["gradcam", "eigencam"])
    assert model_state(inner) == before
    chosen = bool(head.end2end)
    try:
        for end2end in (False, True):
            head.end2end = end2end
            own = explain_detections(yolo, IMAGES[:1], score_threshold=1e-4, max_boxes=5, method="gradcam")
            found = own.detections[0]
            assert 0 < len(found) <= 5
            assert own.maps["gradcam"][0].shape == (len(found), 96, 128)
            assert bool((own.maps["gradcam"][0].amax(dim=(1, 2)) > 0).any())
            with adapter.session(), torch.no_grad():
                output, _ = adapter.run(IMAGES[:1])
                assert adapter._decoded(output)[1] is end2end  # one-to-one boxes come as xyxy
    finally:
        head.end2end = chosen
    assert model_state(inner) == before
