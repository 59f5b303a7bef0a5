"""The `camkit` command, run as users run it: in a subprocess, on the bundled photos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camkit

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CAMKIT = Path(sys.executable).with_name("camkit")  # the installed console script


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = (
        [str(CAMKIT), *map(str, args)] if CAMKIT.exists() else [sys.executable, "-m", "camkit.cli", *map(str, args)]
    )
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("camkit: error:")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_console_script_is_installed():
    assert CAMKIT.exists(), "pip install -e . should install the `camkit` console script"


def test_methods_lists_the_registry():
    result = run("methods")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == camkit.list_methods()
    assert "Score-CAM" in result.stdout


def test_layers_lists_shapes_and_marks_the_default():
    result = run("layers")
    assert result.returncode == 0, result.stderr
    assert any(
        line.startswith("bn2 ") and "1280x7x7" in line and "<- default" in line for line in result.stdout.splitlines()
    )
    small = run("layers", "--model", "torchvision:resnet18", "--no-pretrained", "--input-size", "64")
    assert small.returncode == 0, small.stderr
    assert any(line.split()[:2] == ["layer4", "512x2x2"] for line in small.stdout.splitlines())


def test_explain_writes_overlays_and_maps(tmp_path):
    out = tmp_path / "out"
    result = run(
        "explain",
        ASSETS / "chelsea.png",
        ASSETS / "coffee.png",
        "--method",
        "gradcam",
        "--method",
        "layercam",
        "--topk",
        "2",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert "coffee.png: espresso (967)" in result.stdout
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 2 * 2 * 2 + 2  # images x classes x methods, and one grid of methods per image
    assert "chelsea_grid.png" in pngs
    assert "coffee_gradcam_967.png" in pngs
    assert "coffee_layercam_967.png" in pngs
    for png in out.glob("*_*_*.png"):
        with Image.open(png) as image:
            assert image.size == (224, 224)
            assert image.mode == "RGB"
    raw = np.load(out / "coffee_gradcam_967.npy")
    assert raw.shape == (224, 224)
    assert raw.dtype == np.float32
    assert raw.min() == 0.0
    assert raw.max() == 1.0


def test_explain_a_folder_with_a_class_and_layer(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("rocket.jpg", "coffee.png"):
        (folder / name).write_bytes((ASSETS / name).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run(
        "explain",
        folder,
        "--class",
        "657",
        "--layer",
        "blocks.6",
        "--method",
        "eigencam",
        "--out",
        out,
        "--batch-size",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["coffee_eigencam_657.png", "rocket_eigencam_657.png"]
    assert "blocks.6" in result.stdout


def test_explain_with_a_checkpoint_and_labels(tmp_path):
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(0)
    torch.save(resnet18(num_classes=3).state_dict(), tmp_path / "mine.pt")
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    out = tmp_path / "out"
    args = [
        "--model",
        "torchvision:resnet18",
        "--checkpoint",
        tmp_path / "mine.pt",
        "--labels",
        tmp_path / "labels.txt",
    ]
    result = run("explain", ASSETS / "chelsea.png", *args, "--class", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.glob("*.png")] == ["chelsea_gradcam_1.png"]
    assert all(name in result.stdout for name in ("cat (0)", "dog (1)", "bird (2)"))
    assert_one_line_error(run("explain", ASSETS / "chelsea.png", *args, "--class", "3"), 1, "--class 3", "0..2")


def test_user_errors_are_one_line_with_the_fix(tmp_path):
    assert_one_line_error(run("explain", tmp_path / "missing.png"), 1, "does not exist")
    assert_one_line_error(
        run("explain", ASSETS / "coffee.png", "--method", "gradcam++"), 2, "invalid choice", "gradcampp"
    )
    assert_one_line_error(run("explain", ASSETS / "coffee.png", "--layer", "blocks.9"), 1, "blocks.9", "camkit layers")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    assert_one_line_error(run("explain", corrupt), 1, "cannot read", "corrupt.png")
    assert_one_line_error(run("explain", ASSETS / "coffee.png", "--class", "1000"), 1, "--class 1000", "0..999")
    assert_one_line_error(run("explain", ASSETS / "coffee.png", "--topk", "0"), 1, "--topk")
    assert_one_line_error(run("layers", "--model", "torchvision:resnet_18", "--no-pretrained"), 1, "similar")
    assert_one_line_error(run("explain"), 2, "images")
    assert_one_line_error(run("frobnicate"), 2, "invalid choice")


@pytest.mark.parametrize("argv", [["--help"], ["explain", "--help"], ["report", "--help"]])
def test_help_exits_zero(argv):
    result = run(*argv)
    assert result.returncode == 0
    assert "usage: camkit" in result.stdout
