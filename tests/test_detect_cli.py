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
    from camkit.viz import cell_grid
    from test_detect_adapters import BOXES, IMAGES, fasterrcnn

    result = explain_detections(fasterrcnn(), IMAGES, boxes=[BOXES[0], []], method=["gradcam", "eigencam"])
    figure = result.grid(0, cell_size=64)
    line, pad = cell_grid([], ["header"], cell_size=64, padding=0).height, 8  # no rows: the header line alone
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


DETECTOR = "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn"  # random weights: every score is about 1/91


def _decoded(uri: str) -> Image.Image:
    import base64
    import io

    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_report_of_detections_has_a_row_per_box(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    from _viewer_common import page_data

    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 255, (240, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    page = tmp_path / "report.html"
    code = main(
        [
            "report", str(photo), "--task", "detect", "--model", DETECTOR, "--score-threshold", "0.005",
            "--max-boxes", "2", "--method", "gradcam", "--method", "eigencam", "--out", str(page),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "photo.png: 2 box(es)" in printed
    assert "2 box(es) x 2 method(s)" in printed
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text
    assert "https://" not in text
    info, records = page_data(text)
    assert info["methods"] == ["gradcam", "eigencam"]
    assert "random weights" in info["subtitle"]
    assert len(records) == 2
    for k, record in enumerate(records):  # "photo.png: box k · <label> <score>"
        assert re.fullmatch(rf"photo\.png: box {k} · \S+ 0\.0\d", record["key"]), record["key"]
        assert record["image"].startswith("data:image/png;base64,")
        image = _decoded(record["image"])
        assert image.size == (320, 192)  # shrunk to the report's size before the box is drawn
        plain = Image.fromarray(pixels).resize((320, 192), Image.Resampling.LANCZOS)
        assert not np.array_equal(np.asarray(image.convert("RGB")), np.asarray(plain))  # the box and caption
        assert set(record["maps"]) == {"gradcam", "eigencam"}
        for uris in record["maps"].values():
            assert len(uris) == 1
            assert uris[0].startswith("data:image/png;base64,")
            assert _decoded(uris[0]).size == image.size
        assert len(record["pred"]) == 2  # the image's detections: (label, score)
        assert record["key"].endswith(f"{record['pred'][k][2]} {record['pred'][k][1]:.2f}")
    assert records[0]["pred"] == records[1]["pred"]


def test_report_of_an_image_without_detections(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from _viewer_common import page_data

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    page = tmp_path / "report.html"
    code = main(
        ["report", str(photo), str(broken), "--task", "detect", "--model", DETECTOR, "--score-threshold", "0.9",
         "--out", str(page)]
    )  # fmt: skip
    assert code == 1  # one image skipped, as for classifiers; the other is in the report
    captured = capsys.readouterr()
    assert "photo.png: 0 box(es) (no detection scored above score_threshold=0.9" in captured.out
    assert "camkit: skipped" in captured.err
    assert "broken.png" in captured.err
    info, records = page_data(page.read_text(encoding="utf-8"))
    assert [r["key"].split(" (")[0] for r in records] == ["photo.png: no detections"]
    assert "score_threshold=0.9" in records[0]["key"]
    assert records[0]["maps"] == {}
    assert records[0]["pred"] == []
    assert records[0]["image"].startswith("data:image/png;base64,")
    assert info["methods"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metrics-steps", "8"], "--metrics-steps applies to classifiers"),
        (["--sanity"], "--sanity applies to classifiers"),
        (["--class", "3"], "--class and --topk apply to"),
        (["--method", "scorecam"], "not available with --task detect"),
        (["--alpha", "1.5"], "--alpha must be in [0, 1)"),
    ],
)
def test_report_of_detections_rejects_classifier_options(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(photo), "--task", "detect", "--model", DETECTOR, "--out", str(page), *extra]) == 1
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1
    assert not page.exists()


def test_explain_skips_an_unreadable_image_with_exit_code_1(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    out = tmp_path / "out"
    code = main(
        ["explain", str(photo), str(broken), "--task", "detect", "--model", DETECTOR, "--score-threshold", "0.9",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 1  # as for classifiers: the readable image is written, the other listed on stderr
    captured = capsys.readouterr()
    assert "camkit: skipped" in captured.err
    assert "broken.png" in captured.err
    assert "1 of 2 images were skipped" in captured.err
    assert (out / "detections.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alpha", "2"], "--alpha must be in"),
        (["--colormap", "nope"], "nope"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_explain_checks_numbers_before_loading_the_detector(
    tmp_path: Path,
    photo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    import camkit.detect._command as command

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the detector was loaded before the arguments were checked")

    monkeypatch.setattr(command, "load_detector", refuse)
    code = main(["explain", str(photo), "--task", "detect", "--model", DETECTOR, "--out", str(tmp_path / "o"), *extra])
    assert code == 1  # camkit's user errors: one line, exit code 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
