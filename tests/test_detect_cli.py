"""camkit explain --task detect: overlays per box, raw maps, detections.json; argument errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from camkit.cli import main

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="camkit-ultralytics-"))  # no ~/.config writes


def _import_ultralytics() -> Any:
    """Ultralytics, or a skip; its import-time changes to process-wide settings are undone."""
    from camkit.detect._adapters import process_state_kept

    with process_state_kept():
        return pytest.importorskip("ultralytics")


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_detect_with_yolo_writes_overlays_maps_and_table(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _import_ultralytics()
    out = tmp_path / "out"
    code = main(
        [
            "explain", str(photo), "--task", "detect", "--model", "ultralytics:yolov8n.yaml",
            "--score-threshold", "0.0001", "--max-boxes", "2", "--method", "gradcam", "--method", "drise",
            "--option", "num_masks=8", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    table = json.loads((out / "detections.json").read_text())
    boxes = table["images"][0]["boxes"]
    assert len(boxes) == 2
    for name in ("gradcam", "drise"):
        maps = np.load(out / f"photo_{name}.npy")
        assert maps.shape == (2, 96, 128)
        assert Image.open(out / f"photo_{name}.png").size == (128, 96)
        assert (out / f"photo_{name}_box1.png").exists()
    assert table["images"][0]["grid"] == "photo_grid.png"
    figure = Image.open(out / "photo_grid.png")  # 2 boxes (rows) x the image, gradcam and drise (columns)
    assert figure.width > 3 * 224
    assert 2 * 224 < figure.height < 3 * 224
    printed = capsys.readouterr().out
    assert "random weights" in printed
    assert "1 grid(s)" in printed


def test_detect_without_boxes_above_threshold(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "explain", str(photo), "--task", "detect", "--model", "torchvision:ssdlite320_mobilenet_v3_large",
            "--score-threshold", "0.99", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    table = json.loads((out / "detections.json").read_text())
    assert "no detection scored above score_threshold=0.99" in table["images"][0]["reason"]
    assert np.load(out / "photo_gradcam.npy").shape == (0, 96, 128)
    assert table["images"][0]["grid"] is None
    assert not (out / "photo_grid.png").exists()
    assert "0 box(es)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--task detect needs --model torchvision:NAME"),
        (["--model", "torchvision:ssdlite320_mobilenet_v3_large", "--class", "3"], "--class and --topk apply to"),
        (
            ["--model", "torchvision:ssdlite320_mobilenet_v3_large", "--method", "scorecam"],
            "not available with --task detect",
        ),
        (["--model", "ultralytics:yolov8n.pt"], "builds YOLO from a config"),
    ],
)
def test_detect_argument_errors(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["explain", str(photo), "--task", "detect", "--out", str(tmp_path / "o"), *extra]) == 1
    assert message in capsys.readouterr().err


def _listed(printed: str) -> dict[str, str]:
    """``camkit layers`` rows: layer name -> the rest of its line."""
    rows = [line.split(maxsplit=1) for line in printed.splitlines()[1:] if line and not line.startswith("(")]
    return {row[0]: row[1] for row in rows}


def test_layers_of_a_torchvision_detector(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", "--model", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "--input-size", "160"]) == 0
    printed = capsys.readouterr().out
    assert "TorchvisionAdapter" in printed.splitlines()[0]
    rows = _listed(printed)
    assert [name for name, rest in rows.items() if rest.endswith("<- default")] == ["backbone.body.16"]
    assert rows["backbone.body.16"].startswith("960x")
    assert not any(name.startswith("roi_heads") for name in rows)  # per-box outputs (RoIs, 7x7) are left out
    assert main(["layers", "--model", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "--all"]) == 0
    every = _listed(capsys.readouterr().out)
    assert "roi_heads.box_head" in every
    assert set(rows) < set(every)


def test_layers_of_a_classifier_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", "--model", "torchvision:resnet18", "--no-pretrained", "--input-size", "64"]) == 0
    rows = _listed(capsys.readouterr().out)
    assert rows["layer4"].endswith("<- default")


def test_layers_of_yolo(capsys: pytest.CaptureFixture[str]) -> None:
    _import_ultralytics()
    assert main(["layers", "--model", "ultralytics:yolov8n.yaml", "--input-size", "128"]) == 0
    rows = _listed(capsys.readouterr().out)
    assert rows["model.15"] == "64x16x16  <- default"  # stride 8 of the 128-pixel image
    assert [name for name, rest in rows.items() if rest.endswith("<- default")] == ["model.15"]


def test_layers_of_a_transformers_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_detect_adapters import detr

    detr().save_pretrained(tmp_path / "detr")
    assert main(["layers", "--model", f"transformers:{tmp_path / 'detr'}", "--input-size", "64"]) == 0
    rows = _listed(capsys.readouterr().out)
    assert rows["model.input_projection"] == "32x2x2  <- default"
    assert main(["layers", "--model", f"transformers:{tmp_path / 'nope'}"]) == 1
    assert "is not a local folder" in capsys.readouterr().err


def test_grid_cells_are_each_box_overlay_by_each_method() -> None:
    from PIL import ImageOps

    from camkit.detect import explain_detections
    from camkit.viz.grid import _font, _line_height
    from test_detect_adapters import BOXES, IMAGES, fasterrcnn

    result = explain_detections(fasterrcnn(), IMAGES, boxes=[BOXES[0], []], method=["gradcam", "eigencam"])
    figure = result.grid(0, cell_size=64)
    line, pad = _line_height(_font(10)), 8
    left = line + pad
    assert figure.size == (left + pad + 3 * (64 + pad), line + pad + 2 * (64 + pad))  # 2 boxes x (image + 2)
    for k in range(2):
        for j, name in enumerate(["gradcam", "eigencam"], start=1):
            expected = ImageOps.contain(result.overlay(0, name, box=k), (64, 64), method=Image.Resampling.LANCZOS)
            x = left + pad + j * (64 + pad) + (64 - expected.width) // 2
            y = line + pad + k * (64 + pad) + (64 - expected.height) // 2
            cell = figure.crop((x, y, x + expected.width, y + expected.height))
            assert np.array_equal(np.asarray(cell), np.asarray(expected))
    with pytest.raises(ValueError, match="has no boxes"):
        result.grid(1)
    with pytest.raises(ValueError, match="not computed"):
        result.grid(0, ["drise"])
    with pytest.raises(ValueError, match="image 2 does not exist"):
        result.grid(2)
