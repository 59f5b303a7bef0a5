"""TorchCAM 0.5's documented examples (README, advanced usage, debug a prediction), run side by side.

Each test runs the code a TorchCAM page shows, once with ``torchcam`` and once with
``camkit.compat.torchcam`` (only the import changes), on random-init torchvision models offline,
and compares the outputs: maps within 1e-5 of each map's maximum, overlays pixel-equal, bundles
file for file. Where camkit deliberately differs (Finer-CAM's default weighting) the test says so.
"""

from __future__ import annotations

import json
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import calibrated
from torch import nn
from torch.nn import functional as F

pytest.importorskip("torchcam", minversion="0.5")
tv_models = pytest.importorskip("torchvision.models")
tv_functional = pytest.importorskip("torchvision.transforms.v2.functional")

import torchcam.explain as tc_explain  # noqa: E402
import torchcam.methods as tc_methods  # noqa: E402
import torchcam.utils as tc_utils  # noqa: E402

import camkit.compat.torchcam.explain as ck_explain  # noqa: E402
import camkit.compat.torchcam.methods as ck_methods  # noqa: E402
import camkit.compat.torchcam.utils as ck_utils  # noqa: E402

SIZE = 64
BOTH = [pytest.param(tc_methods, id="torchcam"), pytest.param(ck_methods, id="camkit")]


def _assert_maps_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal within ``tol`` of each map's maximum (TorchCAM's normalization adds eps=1e-8)."""
    assert actual.shape == expected.shape
    scale = expected.flatten(1).abs().amax(1).view(-1, *([1] * (expected.ndim - 1)))
    assert (scale > 0).all(), "an all-zero map: the comparison would be trivial"
    torch.testing.assert_close(actual.detach() / scale, expected.detach() / scale, rtol=tol, atol=tol)


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return calibrated(tv_models.resnet18(weights=None), SIZE)


def _image(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """A uint8 ``(3, H, W)`` image, as ``torchvision.io.decode_image`` returns."""
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _preprocess(img: torch.Tensor) -> torch.Tensor:
    """ImageNet normalization (``weights.transforms()`` without the resize, weights being offline)."""
    x = img.float() / 255
    return tv_functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


# README ------------------------------------------------------------------------------------------
def _readme(methods: Any, model: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    input_tensor = _preprocess(img)
    with methods.LayerCAM(model, input_shape=(3, SIZE, SIZE)) as cam_extractor:
        out = model(input_tensor.unsqueeze(0))
        # Retrieve the CAM by passing the class index and the model output
        activation_map = cam_extractor(out.squeeze(0).argmax().item(), out)
        assert cam_extractor.target_names == ["layer4"]
    return activation_map


def test_readme_layercam_and_overlay() -> None:
    """README "Hooking", "Retrieving the CAM" and "Visualizing" blocks: maps, then the overlay."""
    model, img = _resnet18(), _image()
    theirs, ours = _readme(tc_methods, model, img), _readme(ck_methods, model, img)
    assert len(theirs) == len(ours) == 1
    _assert_maps_close(ours[0], theirs[0])
    overlays = []
    for utils, maps in ((tc_utils, theirs), (ck_utils, ours)):
        # Resize the CAM and overlay it
        result = utils.overlay_mask(
            tv_functional.to_pil_image(img), tv_functional.to_pil_image(maps[0].squeeze(0), mode="F"), alpha=0.5
        )
        overlays.append(np.asarray(result))
    assert overlays[0].shape == (SIZE, SIZE, 3)
    # the same map drawn by both: pixel-equal; each package's own map: within one byte where maps differ by 1e-7
    same = ck_utils.overlay_mask(
        tv_functional.to_pil_image(img), tv_functional.to_pil_image(theirs[0].squeeze(0), mode="F"), alpha=0.5
    )
    np.testing.assert_array_equal(np.asarray(same), overlays[0])
    assert np.abs(overlays[0].astype(int) - overlays[1].astype(int)).max() <= 1


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.7])
@pytest.mark.parametrize("mode", ["F", "L"])
def test_overlay_mask_is_pixel_equal(mode: str, alpha: float) -> None:
    """``overlay_mask`` on float and byte masks (TorchCAM squares bytes in uint8) and grayscale images."""
    rng = np.random.default_rng(7)
    mask_values = rng.random((5, 6)).astype(np.float32)
    mask = (
        Image.fromarray(mask_values, mode="F") if mode == "F" else Image.fromarray((mask_values * 255).astype(np.uint8))
    )
    for img in (Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)), Image.new("L", (9, 7), 90)):
        a = np.asarray(tc_utils.overlay_mask(img, mask, alpha=alpha))
        b = np.asarray(ck_utils.overlay_mask(img, mask, alpha=alpha))
        np.testing.assert_array_equal(b, a)


# Advanced usage ----------------------------------------------------------------------------------
@pytest.mark.parametrize("methods", BOTH)
def test_target_layer_by_name_or_module(methods: Any) -> None:
    """'Locating the target layer': a name and the module itself select the same layer."""
    torch.manual_seed(0)
    model = tv_models.mobilenet_v2(weights=None).eval()
    with methods.SmoothGradCAMpp(model, target_layer="features.7") as by_name:
        names = list(by_name.target_names)
    with methods.SmoothGradCAMpp(model, target_layer=model.features[7]) as by_module:
        assert list(by_module.target_names) == names == ["features.7"]


def _layer_list(methods: Any, model: nn.Module, input_tensor: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    with methods.LayerCAM(model, ["layer2", "layer3", "layer4"]) as cam_extractor:
        out = model(input_tensor)
        class_idx = out.squeeze(0).argmax().item()
        cams = cam_extractor(class_idx, out)  # one map per layer
        fused = cam_extractor.fuse_cams(cams)  # single fused map
    return cams, fused


def test_layercam_on_several_layers_and_fused() -> None:
    model, x = _resnet18(), _preprocess(_image(1)).unsqueeze(0)
    (theirs, their_fused), (ours, our_fused) = _layer_list(tc_methods, model, x), _layer_list(ck_methods, model, x)
    assert [m.shape for m in ours] == [m.shape for m in theirs] == [(1, 8, 8), (1, 4, 4), (1, 2, 2)]
    for mine, ref in zip(ours, theirs, strict=True):
        _assert_maps_close(mine, ref)
    _assert_maps_close(our_fused, their_fused)


def test_refinecam_with_layercam() -> None:
    model, x = _resnet18(), _preprocess(_image(2)).unsqueeze(0)
    refined = []
    for methods in (tc_methods, ck_methods):
        with methods.RefineCAM(model, ["layer2", "layer3", "layer4"], base_method=methods.LayerCAM) as cam_extractor:
            out = model(x)
            refined.append(cam_extractor(out.squeeze(0).argmax().item(), out)[0])
    assert refined[1].shape == (1, 8, 8)
    _assert_maps_close(refined[1], refined[0])


def test_finercam_with_explicit_references() -> None:
    """FinerCAM's example: the mirror keeps TorchCAM's uniform mean of the references; camkit's native
    class weighs them by softmax by default (the authors' code), which visibly differs."""
    import camkit.methods

    model, x = _resnet18(), _preprocess(_image(3)).unsqueeze(0)
    maps = {}
    for name, finer, base in (
        ("torchcam", tc_methods.FinerCAM, tc_methods.LayerCAM),
        ("mirror", ck_methods.FinerCAM, ck_methods.LayerCAM),
        ("native", camkit.methods.FinerCAM, camkit.methods.LayerCAM),
    ):
        with finer(model, "layer4", base_method=base) as cam_extractor:
            out = model(x)
            class_idx = out.squeeze(0).argmax().item()
            cams = cam_extractor(class_idx, out, comparison_idx=[12, 37, 84])
        maps[name] = cams[0]
    _assert_maps_close(maps["mirror"], maps["torchcam"])
    assert (maps["native"] - maps["torchcam"]).abs().max() > 1e-4


def _fcn() -> nn.Module:
    """A small fully convolutional segmenter: (N, 6 classes, H, W) logits."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    return nn.Sequential(backbone, nn.Conv2d(8, 6, 1)).eval()


def test_targets_on_a_segmentation_region() -> None:
    """'Understanding targets': explain class 5 inside a region mask of a dense output."""
    model = _fcn()
    input_batch = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    region_mask = torch.zeros(12, 12, dtype=torch.bool)
    region_mask[3:8, 2:9] = True
    results = []
    for methods in (tc_methods, ck_methods):
        with methods.LayerCAM(model, target_layer="0.2") as cam_extractor:
            output = model(input_batch)
            cams = cam_extractor(scores=output, targets=lambda sample: sample[5][region_mask].mean())
        results.append(cams[0])
    assert results[1].shape == (2, 12, 12)
    _assert_maps_close(results[1], results[0])


def test_targets_on_an_embedding_similarity() -> None:
    """'Understanding targets': the cosine similarity of an image embedding to a text embedding."""
    torch.manual_seed(0)
    model = tv_models.resnet18(weights=None, num_classes=16)
    model = calibrated(model, SIZE)
    text_embedding = torch.randn(16, generator=torch.Generator().manual_seed(5))
    input_batch = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))

    def target(embedding: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(embedding, text_embedding, dim=0)

    results = []
    for methods in (tc_methods, ck_methods):
        with methods.LayerCAM(model, target_layer="layer4") as cam_extractor:
            image_embeddings = model(input_batch)
            results.append(cam_extractor(scores=image_embeddings, targets=target)[0])
    _assert_maps_close(results[1], results[0])


def test_targets_on_per_sample_list_outputs() -> None:
    """Models returning one item per sample: each target receives its sample's item."""

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            pooled = torch.relu(self.features(x)).mean(dim=(2, 3))
            return [{"scores": row} for row in pooled]

    torch.manual_seed(0)
    model = Detector().eval()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    targets = [lambda out: out["scores"][1], lambda out: out["scores"][3]]
    results = []
    for methods in (tc_methods, ck_methods):
        for cls in ("GradCAM", "ScoreCAM"):
            with getattr(methods, cls)(model, "features") as cam_extractor:
                output = model(x)
                results.append(cam_extractor(scores=output, targets=targets)[0])
    _assert_maps_close(results[2], results[0])  # GradCAM
    _assert_maps_close(results[3], results[1])  # ScoreCAM
    # each target must return a scalar, as in TorchCAM
    for methods in (tc_methods, ck_methods):
        with methods.GradCAM(model, "features") as cam_extractor:
            output = model(x)
            with pytest.raises(ValueError, match="scalar tensor"):
                cam_extractor(scores=output, targets=itemgetter("scores"))


def test_batched_gradcam() -> None:
    model = _resnet18()
    input_batch = torch.stack([_preprocess(_image(seed)) for seed in (4, 5, 6)])  # (3, C, H, W)
    results = []
    for methods in (tc_methods, ck_methods):
        with methods.GradCAM(model, "layer4") as cam_extractor:
            out = model(input_batch)  # (3, num_classes)
            class_ids = out.argmax(dim=1).tolist()  # one class per sample
            results.append(cam_extractor(class_ids, out)[0])  # (3, H, W)
    assert results[1].shape == (3, 2, 2)
    _assert_maps_close(results[1], results[0])


def test_wrapped_model_with_module_target() -> None:
    """'Models with multiple inputs': keep the logits of a tuple output, target the module itself."""

    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = _resnet18()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.backbone(x), x.mean()

    class LogitsOnly(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)[0]  # keep the logits, drop the rest

    wrapped = LogitsOnly(WithAux()).eval()
    x = _preprocess(_image(7)).unsqueeze(0)
    results = []
    for methods in (tc_methods, ck_methods):
        with methods.GradCAM(wrapped, target_layer=wrapped.model.backbone.layer4) as cam_extractor:
            assert cam_extractor.target_names == ["model.backbone.layer4"]
            out = wrapped(x)
            results.append(cam_extractor(out.argmax().item(), out)[0])
    _assert_maps_close(results[1], results[0])
    assert [n for n, _ in wrapped.named_modules() if n.endswith("layer4")] == ["model.backbone.layer4"]


def _small_vit(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    model = tv_models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=num_classes
    )
    nn.init.normal_(model.heads.head.weight)  # a zero-init head would give all-zero maps
    return model.eval()


def test_vit_gradcam_with_reshape_transform() -> None:
    """'Vision Transformers': drop the class token and reshape the patch tokens to a grid."""
    model = _small_vit()
    grid_size = model.image_size // model.patch_size

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        patches = tensor[:, 1:, :].reshape(tensor.size(0), grid_size, grid_size, tensor.size(-1))
        return patches.permute(0, 3, 1, 2)

    input_tensor = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    target_layer = model.encoder.layers[-2].ln_1
    results = []
    for methods in (tc_methods, ck_methods):
        with methods.GradCAM(model, target_layer, reshape_transform=reshape_transform) as extractor:
            scores = model(input_tensor)
            results.append(extractor(scores[0].argmax().item(), scores)[0])
    assert results[1].shape == (1, grid_size, grid_size)
    _assert_maps_close(results[1], results[0])


def test_vit_legrad() -> None:
    """'LeGrad for torchvision Vision Transformers': the last four encoder blocks."""
    model = _small_vit()
    input_tensor = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    target_layers = list(model.encoder.layers)[-4:]
    results = []
    for methods in (tc_methods, ck_methods):
        with methods.LeGrad(model, target_layers) as cam_extractor:
            scores = model(input_tensor)
            results.append(cam_extractor(scores.argmax(dim=1).tolist(), scores)[0])
    assert results[1].shape == (2, 4, 4)
    _assert_maps_close(results[1], results[0])


# Debug one prediction ----------------------------------------------------------------------------
def _bundle(explain: Any, model: nn.Module, input_tensor: torch.Tensor, out: Path, image: Image.Image) -> Any:
    result = explain(model, input_tensor, expected_class_idx=7, class_names=[f"class {i}" for i in range(1000)])
    result.save(out, image, alpha=0.5)
    return result


def test_debug_prediction_bundle(tmp_path: Path) -> None:
    """'Debug one prediction' (CNN example): the same maps, files and manifest as TorchCAM's."""
    model = _resnet18()
    img = _image(10)
    image = tv_functional.to_pil_image(img)
    input_tensor = _preprocess(img).unsqueeze(0)
    theirs = _bundle(tc_explain.explain, model, input_tensor, tmp_path / "torchcam-explanation", image)
    ours = _bundle(ck_explain.explain, model, input_tensor, tmp_path / "camkit-explanation", image)

    assert (ours.predicted_class_idx, ours.expected_class_idx) == (theirs.predicted_class_idx, 7)
    assert ours.target_layers == theirs.target_layers == ("layer4",)
    assert ours.cams.keys() == theirs.cams.keys()
    for key, maps in theirs.cams.items():
        _assert_maps_close(ours.cams[key][0][None], maps[0][None])
    files = [
        sorted(p.name for p in (tmp_path / name).iterdir()) for name in ("torchcam-explanation", "camkit-explanation")
    ]
    assert files[0] == files[1]
    assert "manifest.json" in files[1]
    manifests = [
        json.loads((tmp_path / name / "manifest.json").read_text(encoding="utf-8"))
        for name in ("torchcam-explanation", "camkit-explanation")
    ]
    assert manifests[0].keys() == manifests[1].keys()
    assert manifests[0]["classes"].keys() == manifests[1]["classes"].keys()
    for key in ("schema_version", "prediction", "expected", "method", "target_layers", "image_size", "alpha"):
        assert manifests[1][key] == manifests[0][key]
    for stem in (name[: -len(".npy")] for name in files[1] if name.endswith(".npy")):
        with (
            Image.open(tmp_path / "torchcam-explanation" / f"{stem}-heatmap.png") as a,
            Image.open(tmp_path / "camkit-explanation" / f"{stem}-heatmap.png") as b,
        ):
            assert a.mode == b.mode == "L"
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def test_hook_g_holds_the_gradients_of_the_last_call_like_torchcams() -> None:
    """``hook_g`` after a call: TorchCAM's gradients (its backward hooks) equal camkit's (autograd.grad)."""
    model = tv_models.resnet18(num_classes=5).eval()
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    found = {}
    for lib in (tc_methods, ck_methods):
        with lib.LayerCAM(model, "layer3") as extractor:
            scores = model(x)
            extractor([1, 3], scores)
            found[lib.__name__] = [g.detach().clone() for g in extractor.hook_g]
    ours, theirs = found[ck_methods.__name__], found[tc_methods.__name__]
    assert len(ours) == len(theirs) == 1
    assert ours[0].shape == (2, 256, 4, 4)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-7)
    with ck_methods.GradCAM(model, "layer3") as fresh:
        assert fresh.hook_g == [None]  # nothing computed yet
