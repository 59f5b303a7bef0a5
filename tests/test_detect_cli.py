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
    assert "random weights" in capsys.readouterr().out


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
