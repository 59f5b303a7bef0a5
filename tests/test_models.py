"""The offline default model, loaders by name, checkpoints, preprocessing and explain()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.models import resnet18

from camkit.explanation import explain, extractor_class
from camkit.methods import FullGrad, GradCAM
from camkit.models import Preprocess, imagenet_categories, load_checkpoint, load_default, load_model

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Each bundled photo with the ImageNet classes that are right for it (see assets/LICENSE.md).
TRUE_CLASSES = {
    "chelsea.png": {281, 282, 285},  # tabby, tiger cat, Egyptian cat
    "coffee.png": {967},  # espresso
    "rocket.jpg": {657, 744},  # missile, projectile
    "grace_hopper.jpg": {652},  # military uniform
}


@pytest.fixture(scope="module")
def default_model():
    return load_default()


def test_default_model_classifies_the_bundled_photos(default_model):
    assert default_model.target_layer == "bn2"
    assert not default_model.model.training
    names = sorted(TRUE_CLASSES)
    x = torch.stack([default_model.preprocess(Image.open(ASSETS / n)) for n in names])
    with torch.no_grad():
        top5 = default_model.model(x).topk(5, dim=1).indices
    for name, row in zip(names, top5.tolist(), strict=True):
        assert TRUE_CLASSES[name] & set(row), f"{name}: top-5 {row} misses {TRUE_CLASSES[name]}"
    # top-1 is right for the three photos whose subject is an ImageNet class
    for name, row in zip(names, top5.tolist(), strict=True):
        if name != "grace_hopper.jpg":
            assert row[0] in TRUE_CLASSES[name], (name, row[0], default_model.categories[row[0]])


def test_categories_are_imagenet_names():
    names = imagenet_categories()
    assert len(names) == 1000
    assert (names[0], names[281], names[967]) == ("tench", "tabby", "espresso")


def test_preprocess_matches_torchvision_transforms():
    image = Image.open(ASSETS / "rocket.jpg")
    ours = Preprocess(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(image)
    reference = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )(image.convert("RGB"))
    assert ours.shape == reference.shape == (3, 224, 224)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_checkpoint_round_trip_and_unsafe_files_refused(tmp_path):
    model = resnet18(num_classes=1000).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pt")
    loaded = load_checkpoint(tmp_path / "w.pt", "torchvision:resnet18")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    # a pickled object (arbitrary code) is refused by weights_only loading
    torch.save({"model": model}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights-only"):
        load_checkpoint(tmp_path / "pickled.pt", "torchvision:resnet18")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt", "torchvision:resnet18")
    # a fine-tuned head: the class count comes from the checkpoint, names are unknown
    ten = resnet18(num_classes=10).eval()
    torch.save(ten.state_dict(), tmp_path / "ten.pt")
    loaded = load_checkpoint(tmp_path / "ten.pt", "torchvision:resnet18")
    assert loaded.categories is None
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ten(x))
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(tmp_path / "ten.pt", "torchvision:resnet34")


def test_loaders_by_name_never_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_model("torchvision:resnet18")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_model("timm:resnet10t")
    random = load_model("resnet18", pretrained=False)
    assert random.name == "torchvision:resnet18"
    assert random.target_layer == "layer4"
    assert not random.pretrained
    assert load_model("timm:resnet10t", pretrained=False).target_layer == "layer4"
    with pytest.raises(ValueError, match="similar"):
        load_model("torchvision:resnet_18")
    with pytest.raises(ValueError, match="torchvision:ARCH or timm:ARCH"):
        load_model("keras:resnet18")


def test_extractor_class_comes_from_the_registry():
    assert extractor_class("gradcam") is GradCAM
    assert extractor_class("fullgrad") is FullGrad
    assert extractor_class("Grad-CAM") is GradCAM
    with pytest.raises(ValueError, match="gradcam"):
        extractor_class("gradcam2")


def test_explain_matches_the_extractor_and_explains_topk():
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64)
    result = explain(model, x, ["gradcam", "layercam"], target_layer="layer4", topk=3)
    assert result.maps["gradcam"].shape == (2, 3, 64, 64)
    torch.testing.assert_close(result.classes, model(x).topk(3, dim=1).indices)
    with GradCAM(model, "layer4", input_shape=(3, 64, 64)) as extractor:
        scores = model(x)
        cam = extractor(result.classes[:, 1].tolist(), scores)[0]
    expected = torch.nn.functional.interpolate(cam[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    lo = expected.flatten(1).min(1).values[:, None, None]
    hi = expected.flatten(1).max(1).values[:, None, None]
    torch.testing.assert_close(result.maps["gradcam"][:, 1], (expected - lo) / (hi - lo))
    with pytest.raises(ValueError, match="topk"):
        explain(model, x, topk=0)
    with pytest.raises(ValueError, match="tensors"):
        result.overlay("gradcam")


def test_explain_shares_one_forward_and_its_first_forward_gives_the_classes():
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64)
    shared = ["gradcam", "layercam", "eigencam"]
    forwards = []
    handle = model.register_forward_pre_hook(lambda _m, _a: forwards.append(1))
    try:
        result = explain(model, x, shared, target_layer="layer4", topk=2)
        captured = len(forwards)
        forwards.clear()
        given = explain(model, x, ["gradcam", "fullgrad"], target_layer="layer4", class_idx=[3, 7])
        own = len(forwards)
    finally:
        handle.remove()
    # one forward for the three methods, none of its own to choose the classes; FullGrad (its own
    # layers) runs a forward of its own
    assert captured == 1
    assert own == 2
    # a perturbation method shares the capture too (it re-runs the model from the captured input)
    mixed = explain(model, x, ["gradcam", "ablationcam"], target_layer="layer4", topk=2, batch_size=64)
    for name, maps in [*result.maps.items(), ("ablationcam", mixed.maps["ablationcam"])]:
        alone = explain(model, x, name, target_layer="layer4", topk=2, batch_size=64)
        assert torch.equal(maps, alone.maps[name]), name  # exactly what each method gives alone
    with torch.no_grad():
        plain = model(x)
    torch.testing.assert_close(result.probabilities, plain.softmax(dim=1))
    torch.testing.assert_close(result.classes, plain.topk(2, dim=1).indices)
    assert given.classes.tolist() == [[3], [7]]
    assert given.layers["gradcam"] == ["layer4"]
    with pytest.raises(ValueError, match=r"class_idx 10 is out of range.*0\.\.9"):
        explain(model, x, "gradcam", target_layer="layer4", class_idx=10)
    with pytest.raises(ValueError, match="method is empty"):
        explain(model, x, [])


def test_explain_names_the_fix_for_a_model_without_class_scores():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())  # a feature map, not class scores
    with pytest.raises(ValueError, match=r"needs class scores \(N, num_classes\).*Wrapping a model"):
        explain(net, torch.rand(1, 3, 8, 8), "gradcam", target_layer="0")


def test_explain_on_files_gives_overlays(default_model):
    result = explain(default_model, [ASSETS / "coffee.png"], "gradcam")
    assert result.top(1)[0][0][:2] == (967, "espresso")
    overlay = result.overlay()
    assert overlay.size == (224, 224)
    assert overlay.mode == "RGB"
    cam = result.maps["gradcam"][0, 0]
    assert float(cam.min()) == 0.0
    assert float(cam.max()) == 1.0
