"""camkit.viz: colormaps, overlay_mask (hand-computed and against TorchCAM), figures and the HTML report."""

from __future__ import annotations

import ast
import base64
import html.parser
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from _viewer_common import page_data
from camkit.viz import (
    ReportRow,
    apply_colormap,
    builtin_colormaps,
    cell_grid,
    colorize,
    get_colormap,
    grid,
    list_colormaps,
    overlay_mask,
    render_report,
    slices,
    strip,
    to_mask_image,
    write_report,
)
from camkit.viz import colormaps as colormaps_module

VIZ_SRC = Path(__file__).resolve().parents[1] / "src" / "camkit" / "viz"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int64)


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A real-size test picture: noise plus shapes, so every byte value and edge gets exercised."""
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
    image = Image.fromarray(noise)
    ImageDraw.Draw(image).ellipse((width // 5, height // 5, width // 2, height // 2), fill=(200, 60, 20))
    return image


def random_map(h: int = 7, w: int = 7, seed: int = 0) -> torch.Tensor:
    cam = torch.rand(h, w, generator=torch.Generator().manual_seed(seed))
    return (cam - cam.min()) / (cam.max() - cam.min())


# --- colormaps ---------------------------------------------------------------------------------


def test_builtin_jet_ends_and_middle_by_hand() -> None:
    jet = get_colormap("jet")
    assert jet.shape == (256, 3)
    assert jet.dtype == torch.uint8
    assert jet[0].tolist() == [0, 0, 127]  # dark blue: blue starts at 0.5 -> floor(127.5)
    assert jet[255].tolist() == [127, 0, 0]  # dark red
    # index 64 is x = 64/255 = 0.251: green on its 0.125 -> 0.375 ramp at 0.504 -> 128, blue saturated.
    assert jet[64].tolist() == [0, 128, 255]
    gray = get_colormap("gray")[:, 0].long()
    assert gray[0] == 0
    assert gray[255] == 255
    assert (gray.diff() >= 0).all()
    assert (gray - torch.arange(256)).abs().max() <= 1  # floor(255 * i / 255) may land one below i
    assert get_colormap("grey").equal(get_colormap("gray"))


@pytest.mark.parametrize("name", ["jet", "jet_r", "gray", "gray_r"])
def test_builtin_tables_equal_matplotlibs(name: str) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    expected = matplotlib.colormaps[name](np.arange(256), bytes=True)[:, :3]
    assert np.array_equal(get_colormap(name).numpy(), expected)


def test_matplotlib_colormaps_are_read_when_installed() -> None:
    pytest.importorskip("matplotlib")
    assert {"viridis", "inferno", "turbo", "jet"} <= set(list_colormaps())
    assert get_colormap("viridis").shape == (256, 3)


def test_without_matplotlib_only_builtins_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(colormaps_module, "_matplotlib_colormaps", lambda: None)
    assert list_colormaps() == builtin_colormaps() == ["gray", "gray_r", "jet", "jet_r"]
    assert get_colormap("jet").shape == (256, 3)
    with pytest.raises(ValueError, match=r"colormap='viridis' needs matplotlib.*gray, gray_r, jet, jet_r"):
        get_colormap("viridis")


def test_colormap_errors_name_the_value_and_choices() -> None:
    with pytest.raises(ValueError, match=r"colormap='nope' is not a known colormap; accepted: .*jet"):
        get_colormap("nope")
    with pytest.raises(TypeError, match="colormap must be a name or a"):
        get_colormap(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="uint8"):
        get_colormap(torch.zeros(256, 3))
    with pytest.raises(ValueError, match=r"shape \(K, 3\)"):
        get_colormap(torch.zeros(256, 4, dtype=torch.uint8))


def test_apply_colormap_indexing_and_custom_table() -> None:
    table = torch.tensor([[0, 0, 0], [10, 10, 10], [20, 20, 20], [30, 30, 30]], dtype=torch.uint8)
    values = torch.tensor([0.0, 0.2499, 0.25, 0.74, 0.75, 1.0, -0.5, 1.5])
    # floor(x * 4), with 1.0 and out-of-range values taking the end colours
    assert apply_colormap(values, table)[:, 0].tolist() == [0, 0, 10, 20, 30, 30, 0, 30]
    assert apply_colormap(values, table.numpy()).equal(apply_colormap(values, table))
    with pytest.raises(ValueError, match="NaN"):
        apply_colormap(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="floating-point tensor"):
        apply_colormap(torch.tensor([1, 2]))


# --- overlay_mask ------------------------------------------------------------------------------


def tiny_image() -> Image.Image:
    image = Image.new("RGB", (2, 2))
    colours = {(0, 0): (255, 255, 255), (1, 0): (0, 0, 0), (0, 1): (100, 50, 200), (1, 1): (10, 20, 30)}
    for xy, colour in colours.items():
        image.putpixel(xy, colour)
    return image


TINY_MASK = [[0.0, 0.5], [1.0, 0.25]]  # rows are y, columns x
# Hand-computed with alpha = 0.25: the mask is squared (TorchCAM's convention) and indexes jet at
# floor(256 * m^2): 0 -> 0 (0,0,127); 0.25 -> 64 (0,128,255); 1 -> 255 (127,0,0);
# 0.0625 -> 16: x = 16/255 = 0.0627, blue 0.5 + 0.5 * x / 0.11 = 0.785 -> (0,0,200).
# Each byte is floor(h + 0.25 * (img - h)):
TINY_EXPECTED = {
    (0, 0): (63, 63, 159),  # h (0,0,127), img (255,255,255): 63.75, 63.75, 159
    (1, 0): (0, 96, 191),  # h (0,128,255), img (0,0,0): 0, 96, 191.25
    (0, 1): (120, 12, 50),  # h (127,0,0), img (100,50,200): 120.25, 12.5, 50
    (1, 1): (2, 5, 157),  # h (0,0,200), img (10,20,30): 2.5, 5, 157.5
}


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor(TINY_MASK),
        torch.tensor([TINY_MASK], dtype=torch.float64),  # (1, H, W), float64
        np.array(TINY_MASK, dtype=np.float32),
        Image.fromarray(np.array(TINY_MASK, dtype=np.float32)),  # mode F, as to_pil_image(cam, mode="F")
        torch.tensor(TINY_MASK, requires_grad=True),
    ],
    ids=["tensor", "tensor-1hw-f64", "numpy", "pil-F", "requires-grad"],
)
def test_overlay_matches_hand_computed_blend(mask: Any) -> None:
    out = overlay_mask(tiny_image(), mask, colormap="jet", alpha=0.25)
    assert out.mode == "RGB"
    assert out.size == (2, 2)
    assert {xy: out.getpixel(xy) for xy in TINY_EXPECTED} == TINY_EXPECTED


def test_overlay_byte_and_binary_masks() -> None:
    image = Image.new("L", (2, 1), 255)
    full = overlay_mask(image, Image.fromarray(np.array([[0, 255]], dtype=np.uint8)), alpha=0.5)
    assert [full.getpixel((x, 0)) for x in range(2)] == [(127, 127, 191), (191, 127, 127)]
    binary = Image.fromarray(np.array([[False, True]]))
    assert binary.mode == "1"
    assert pixels(overlay_mask(image, binary, alpha=0.5)).tolist() == pixels(full).tolist()
    assert pixels(overlay_mask(image, torch.tensor([[0, 255]], dtype=torch.uint8), alpha=0.5)).tolist() == (
        pixels(full).tolist()
    )


def test_overlay_resizes_the_mask_bicubically_to_the_image() -> None:
    out = overlay_mask(photo(50, 30), random_map(4, 6))
    assert out.size == (50, 30)


@pytest.mark.parametrize("colormap", ["jet", "viridis", "inferno", "turbo"])
@pytest.mark.parametrize("alpha", [0.7, 0.5, 0.0])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_overlay_equals_torchcam(colormap: str, alpha: float, mode: str) -> None:
    """Differential test on a real-size image: camkit's overlay equals TorchCAM's pixel for pixel."""
    torchcam_utils = pytest.importorskip("torchcam.utils")
    image = photo(320, 240).convert(mode)
    cam = random_map(7, 9)
    pil_mask = Image.fromarray(cam.numpy())  # mode F, what torchvision's to_pil_image(cam, mode="F") gives
    expected = pixels(torchcam_utils.overlay_mask(image, pil_mask, colormap=colormap, alpha=alpha))
    for mask in (cam, pil_mask, cam.double().numpy()):
        got = pixels(overlay_mask(image, mask, colormap=colormap, alpha=alpha))
        assert np.abs(got - expected).max() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_overlay_of_a_gpu_map_equals_the_cpu_one() -> None:
    cam = random_map()
    assert np.array_equal(pixels(overlay_mask(photo(), cam.cuda())), pixels(overlay_mask(photo(), cam)))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 1.0}, ValueError, r"alpha must be a float in \[0, 1\).*got 1.0"),
        ({"alpha": -0.1}, ValueError, r"alpha must be a float in \[0, 1\)"),
        ({"alpha": float("nan")}, ValueError, "alpha"),
        ({"alpha": "0.5"}, TypeError, "alpha must be a float"),
        ({"alpha": True}, TypeError, "alpha must be a float"),
        ({"img": torch.zeros(3, 4, 4)}, TypeError, "img must be a PIL.Image.Image, got Tensor"),
        ({"img": Image.new("I", (4, 4))}, ValueError, "img mode must be one of .* got 'I'"),
        ({"mask": torch.zeros(2, 4, 4)}, ValueError, r"mask must have shape \(H, W\), got \(2, 4, 4\)"),
        ({"mask": torch.full((2, 2), float("nan"))}, ValueError, "NaN or infinite"),
        ({"mask": torch.tensor([[0.0, 2.0]])}, ValueError, r"values must lie in \[0, 1\], got \[0, 2\].*normalize"),
        ({"mask": torch.zeros(2, 2, dtype=torch.int64)}, TypeError, "mask must hold floats"),
        ({"mask": Image.new("RGB", (2, 2))}, ValueError, "mask image mode must be one of F, L, 1, got 'RGB'"),
        ({"mask": [[0.0, 1.0]]}, TypeError, "mask must be a PIL image, a torch tensor or a numpy array, got list"),
        ({"colormap": "nope"}, ValueError, "colormap='nope'"),
    ],
)
def test_overlay_errors_name_argument_value_and_choices(kwargs: dict[str, Any], error: type, match: str) -> None:
    arguments: dict[str, Any] = {"img": Image.new("RGB", (4, 4)), "mask": torch.zeros(2, 2), **kwargs}
    with pytest.raises(error, match=match):
        overlay_mask(**arguments)


def test_overlay_accepts_other_image_modes_and_drops_alpha() -> None:
    rgba = photo(16, 16).convert("RGBA")
    assert overlay_mask(rgba, random_map()).tobytes() == overlay_mask(rgba.convert("RGB"), random_map()).tobytes()
    assert overlay_mask(photo(16, 16).convert("P"), random_map()).mode == "RGB"


def test_colorize_and_to_mask_image() -> None:
    heat = colorize(torch.tensor([[0.0, 1.0]]), "jet")
    assert [heat.getpixel((x, 0)) for x in range(2)] == [(0, 0, 127), (127, 0, 0)]  # not squared
    assert colorize(random_map(), size=(20, 10)).size == (20, 10)
    image = to_mask_image(np.array([[0.0, 0.5]]))
    assert image.mode == "F"
    assert image.getpixel((1, 0)) == 0.5


# --- figures -----------------------------------------------------------------------------------


def test_grid_cells_are_the_image_and_its_overlays() -> None:
    images = [photo(32, 32, seed=1), photo(32, 32, seed=2)]
    maps = {"gradcam": [random_map(seed=1), random_map(seed=2)], "layercam": [random_map(seed=3), random_map(seed=4)]}
    figure = grid(images, maps, cell_size=32, padding=4, alpha=0.5)
    assert figure.width == 4 + 3 * (32 + 4)
    header = figure.height - 2 * (32 + 4)
    header_strip = pixels(figure.crop((0, 0, figure.width, header)))
    assert (header_strip < 200).any()  # the column names are drawn
    for i, image in enumerate(images):
        top = header + i * (32 + 4)
        cells = [image, *(overlay_mask(image, maps[m][i], alpha=0.5) for m in maps)]
        for j, cell in enumerate(cells):
            left = 4 + j * (32 + 4)
            assert np.array_equal(pixels(figure.crop((left, top, left + 32, top + 32))), pixels(cell))


def test_grid_row_labels_and_aspect_ratio() -> None:
    figure = grid([photo(60, 30)], {"gradcam": [random_map()]}, cell_size=64, row_labels=["a long file name.jpg"])
    plain = grid([photo(60, 30)], {"gradcam": [random_map()]}, cell_size=64)
    assert figure.width > plain.width
    assert figure.height == plain.height


@pytest.mark.parametrize(
    ("images", "maps", "kwargs", "match"),
    [
        ([], {}, {}, "images must be a non-empty sequence"),
        ([Image.new("RGB", (8, 8))], {"gradcam": []}, {}, r"maps\['gradcam'\] has 0 maps for 1 images"),
        ([Image.new("RGB", (8, 8))], {"gradcam": torch.rand(7, 7)}, {}, "one map per image, got a single map"),
        ([Image.new("RGB", (8, 8))], {}, {"cell_size": 4}, "cell_size must be an int >= 16, got 4"),
        ([Image.new("RGB", (8, 8))], {}, {"row_labels": ["a", "b"]}, "row_labels must be a sequence of 1 strings"),
    ],
)
def test_grid_errors(images: Any, maps: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        grid(images, maps, **kwargs)


def test_cell_grid_is_the_layout_of_grid() -> None:
    images = [photo(40, 30, seed=1), photo(30, 40, seed=2)]
    maps = {"gradcam": [random_map(seed=1), random_map(seed=2)]}
    cells = [[image, overlay_mask(image, maps["gradcam"][i], alpha=0.3)] for i, image in enumerate(images)]
    titles = ["first", "second"]
    expected = grid(images, maps, alpha=0.3, cell_size=48, padding=2, row_labels=titles)
    figure = cell_grid(cells, ["image", "gradcam"], row_titles=titles, cell_size=48, padding=2)
    assert np.array_equal(pixels(figure), pixels(expected))
    header = cell_grid([], ["image"], cell_size=48, padding=0).height  # no rows: the header line alone
    short = cell_grid([[images[0]]], ["image", "gradcam"], cell_size=48, padding=2)  # a cell left blank
    assert short.size == (2 + 2 * (48 + 2), header + 2 + 48 + 2)
    assert (pixels(short.crop((2 + 50, header + 2, 2 + 50 + 48, header + 50))) == 255).all()
    with pytest.raises(ValueError, match=r"cells\[0\] has 3 pictures for 2 headers"):
        cell_grid([[images[0]] * 3], ["image", "gradcam"])
    with pytest.raises(ValueError, match="row_titles must be a sequence of 1 strings"):
        cell_grid([[images[0]]], ["image"], row_titles=["a", "b"])


def volume_map(depth: int = 16, size: int = 8) -> torch.Tensor:
    z = torch.arange(depth).float().view(-1, 1, 1)
    return (z / (depth - 1)).expand(depth, size, size).contiguous()


def test_slices_picks_evenly_spaced_centred_slices() -> None:
    cam = volume_map(16, 8)
    montage = slices(cam, num=4, cell_size=8, padding=0, columns=4)
    assert montage.width == 4 * 8
    for k, index in enumerate([2, 6, 10, 14]):  # floor((k + 1/2) * 16 / 4)
        cell = montage.crop((8 * k, 0, 8 * k + 8, 8))
        assert np.array_equal(pixels(cell), pixels(colorize(cam[index])))


def test_slices_overlay_on_an_image_volume_of_another_size() -> None:
    cam = volume_map(8, 4)
    image = torch.randn(16, 12, 12, generator=torch.Generator().manual_seed(0)) * 300 + 40  # any range
    montage = slices(cam, image, num=2, cell_size=12, padding=0, columns=2, alpha=0.5)
    gray = (image - image.min()) / (image.max() - image.min())
    resized = torch.nn.functional.interpolate(cam[None, None], size=(16, 12, 12), mode="trilinear")[0, 0]
    index = 4  # floor(0.5 * 16 / 2)
    expected = overlay_mask(Image.fromarray((gray[index] * 255).round().byte().numpy()), resized[index], alpha=0.5)
    assert np.array_equal(pixels(montage.crop((0, 0, 12, 12))), pixels(expected))


def test_slices_axis_num_larger_than_depth_and_numpy() -> None:
    cam = volume_map(4, 6)
    assert slices(cam.numpy(), num=10, cell_size=8, padding=0, columns=10).width == 4 * 8  # all 4 slices
    assert slices(cam[None], axis=-1, num=6, cell_size=8, padding=0, columns=6).width == 6 * 8  # (1, D, H, W)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"volume": torch.rand(4, 4)}, ValueError, r"volume must have shape \(D, H, W\)"),
        ({"axis": 3}, ValueError, "axis must be 0, 1 or 2"),
        ({"num": 0}, ValueError, "num must be an int >= 1, got 0"),
        ({"volume": [[[0.5]]]}, TypeError, "volume must be a"),
        ({"image": torch.rand(4, 4)}, ValueError, r"image must be a real \(D, H, W\) volume"),
    ],
)
def test_slices_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    arguments: dict[str, Any] = {"volume": torch.rand(4, 4, 4), **kwargs}
    with pytest.raises(error, match=match):
        slices(**arguments)


def test_strip_of_1d_maps() -> None:
    maps = torch.linspace(0, 1, 50).expand(3, 50)
    image = strip(maps, width=100, row_height=10, padding=2)
    assert image.size == (2 + 100 + 2, 2 + 3 * 12)
    assert image.getpixel((2, 2)) == (0, 0, 127)
    assert image.getpixel((101, 2)) == (127, 0, 0)
    with_signal = strip(maps[0], torch.sin(torch.linspace(0, 6, 80)), width=100, row_height=10, labels=["x"])
    assert with_signal.width > 104
    with pytest.raises(ValueError, match=r"signals must be finite, .* N = 3 rows"):
        strip(maps, torch.rand(2, 50))


# --- the HTML report ---------------------------------------------------------------------------


class PageParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.scripts: list[str] = []
        self.attrs: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.append(dict(attrs))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def decoded(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def report_rows() -> list[ReportRow]:
    return [
        ReportRow(
            'a <script>alert("x")</script>.jpg',
            photo(64, 48),
            [("tabby <cat>", 0.8312), ("tiger & cat", torch.tensor(0.1))],  # type: ignore[list-item]
            {"gradcam": random_map(seed=1), "layercam": random_map(seed=2).numpy()},
            {"gradcam": {"drop": 12.5, "increase": 0.25}, "layercam": {"drop": 10.0}},
        ),
        ReportRow("b.png", photo(500, 400).convert("L"), [("dog", 0.5)], {"gradcam": random_map(seed=3)}),
    ]


def test_report_is_the_viewer_page_self_contained_escaped_and_complete() -> None:
    from camkit.viz.page import static_file

    page = render_report(report_rows(), title="T <1>", subtitle="model & weights")
    parsed = parse(page)
    # the viewer's page: its script and stylesheet inline, nothing loaded by URL
    assert static_file("viewer.js").decode() in parsed.scripts
    assert not [a for a in parsed.attrs if a.get("src") and not str(a["src"]).startswith("data:")]
    assert "link" not in parsed.tags or all(a.get("rel") == "icon" for a in parsed.attrs if "rel" in a)
    policy = next(a["content"] for a in parsed.attrs if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in str(policy)
    assert "img-src data:" in str(policy)
    assert "unsafe-inline" not in str(policy)
    assert "http://" not in page
    assert "https://" not in page
    # user strings never appear as markup: escaped in the title, JSON-escaped in the data
    assert '<script>alert("x")' not in page
    assert "<title>T &lt;1&gt;</title>" in page
    info, records = page_data(page)
    assert info["title"] == "T <1>"
    assert info["subtitle"].startswith("model & weights; colormap jet, image weight 0.5")
    assert info["methods"] == ["gradcam", "layercam"]
    assert info["metrics"] == ["gradcam:drop", "gradcam:increase", "layercam:drop"]
    assert info["opacity"] == 0.5
    assert decoded(info["legend"]).size == (256, 1)
    # every image and method: the input and one heat layer per map, PNGs of the shown size
    assert [r["key"] for r in records] == ['a <script>alert("x")</script>.jpg', "b.png"]
    assert records[0]["pred"] == [[None, 0.8312, "tabby <cat>"], [None, pytest.approx(0.1), "tiger & cat"]]
    assert set(records[0]["maps"]) == {"gradcam", "layercam"}
    assert set(records[1]["maps"]) == {"gradcam"}
    for record in records:
        image = decoded(record["image"])
        assert image.format == "PNG"
        assert [image.height, image.width] == record["size"]
        for uris in record["maps"].values():
            assert decoded(uris[0]).size == image.size
    assert decoded(records[1]["image"]).size == (320, 256)  # 500 px shrunk to fit
    assert records[0]["metrics"] == {"gradcam": {"drop": 12.5, "increase": 0.25}, "layercam": {"drop": 10.0}}
    summary = info["summary"]
    assert summary["caption"] == "Mean over the 1 image with metrics (non-finite values left out)"
    assert summary["values"]["gradcam"] == {"drop": 12.5, "increase": 0.25}


def test_report_heat_layers_over_the_input_are_overlay_mask() -> None:
    row = report_rows()[0]
    _, records = page_data(render_report([row], alpha=0.3))
    heat = decoded(records[0]["maps"]["gradcam"][0]).convert("RGB")
    image = decoded(records[0]["image"]).convert("RGB")
    # the page draws the heat layer over the input with opacity 1 - alpha: overlay_mask's blend
    blended = Image.blend(heat, image, 0.3)
    assert np.array_equal(pixels(blended), pixels(overlay_mask(row.image, row.maps["gradcam"], alpha=0.3)))


def test_report_jpeg_images() -> None:
    info, records = page_data(render_report(report_rows(), image_format="jpeg"))
    assert info["legend"].startswith("data:image/png;base64,")  # the colour scale stays exact
    assert all(r["image"].startswith("data:image/jpeg;base64,") for r in records)
    assert all(u.startswith("data:image/png;base64,") for r in records for us in r["maps"].values() for u in us)
    with pytest.raises(ValueError, match="image_format must be one of 'png', 'jpeg', got 'gif'"):
        render_report(report_rows(), image_format="gif")


def test_report_without_metrics_says_so() -> None:
    row = ReportRow("x.png", photo(32, 32), [], {})
    info, records = page_data(render_report([row]))
    assert info["summary"] == {"note": "No metrics were computed for this report."}
    assert info["metrics"] == []
    assert records[0]["pred"] == []
    assert records[0]["maps"] == {}


def test_write_report_creates_folders(tmp_path: Path) -> None:
    path = write_report(tmp_path / "deep" / "er" / "report.html", report_rows()[1:], title="ok")
    assert path == tmp_path / "deep" / "er" / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: ReportRow(1, photo(), [], {}), TypeError, "ReportRow.title must be a str, got int"),  # type: ignore[arg-type]
        (lambda: ReportRow("t", torch.zeros(3, 4, 4), [], {}), TypeError, "ReportRow.image must be a PIL"),  # type: ignore[arg-type]
        (lambda: ReportRow("t", photo(), [("a",)], {}), TypeError, r"predictions entries must be .* got \('a',\)"),  # type: ignore[list-item]
        (lambda: ReportRow("t", photo(), [("a", "b")], {}), TypeError, "must be \\(str, number\\) pairs"),  # type: ignore[list-item]
        (lambda: ReportRow("t", photo(), [], {"m": [0.5]}), TypeError, "ReportRow.maps must map"),  # type: ignore[dict-item]
        (lambda: ReportRow("t", photo(), [], {}, {"m": {"x": "1"}}), TypeError, "ReportRow.metrics"),  # type: ignore[dict-item]
        (lambda: render_report([]), ValueError, "rows must be a non-empty sequence of ReportRow"),
        (lambda: render_report(["row"]), TypeError, r"rows\[0\] must be a ReportRow, got str"),  # type: ignore[list-item]
        (lambda: render_report(report_rows(), alpha=1.5), ValueError, "alpha"),
        (lambda: render_report(report_rows(), max_image_size=4), ValueError, "max_image_size must be an int >= 16"),
        (
            lambda: render_report([ReportRow("t.png", photo(), [], {"gradcam": torch.rand(2, 3, 3)})]),
            ValueError,
            r"rows\[0\].maps\['gradcam'\] \('t.png'\): mask must have shape \(H, W\)",
        ),
    ],
)
def test_report_errors(build: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_report_accepts_gpu_maps() -> None:
    row = ReportRow("g.png", photo(32, 32), [("a", 0.5)], {"gradcam": random_map().cuda()})
    assert len(page_data(render_report([row]))[1][0]["maps"]["gradcam"]) == 1


# --- layering ----------------------------------------------------------------------------------


def test_viz_imports_no_leaf_module() -> None:
    """viz sits on level 4: it may use ops/registry/targets/engine/methods, never compat, cli or models."""
    forbidden = ("camkit.compat", "camkit.cli", "camkit.models", "camkit.explanation")
    for source in VIZ_SRC.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            assert not [n for n in names if n.startswith(forbidden)], (source.name, names)
        assert len(source.read_text().splitlines()) < 400, source.name


def test_report_summary_leaves_out_non_finite_values_and_accepts_list_pairs() -> None:
    rows = [
        ReportRow("a", photo(16, 16), [["cat", 0.5]], {}, {"gradcam": {"drop": 1.0}}),  # type: ignore[list-item]
        ReportRow("b", photo(16, 16), [], {}, {"gradcam": {"drop": float("nan"), "auc": float("nan")}}),
    ]
    info, records = page_data(render_report(rows))
    assert info["summary"]["caption"].startswith("Mean over the 2 images")
    assert info["summary"]["values"]["gradcam"] == {"drop": 1.0, "auc": None}  # auc: no finite value at all
    assert records[1]["metrics"]["gradcam"] == {"drop": None, "auc": None}  # shown as n/a
