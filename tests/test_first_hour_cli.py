"""A new user's first hour with `camkit explain/report/run/export/layers`: output names, predictions,
grids, folders with bad files, --full-image, and one-line errors before any work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camkit.cli
from camkit.cli import full_image_map, main
from camkit.engine import candidate_layers
from camkit.models import Preprocess
from camkit.runner.export import check_out, output_bases

ASSETS = Path(__file__).resolve().parents[1] / "assets"
RANDOM = ["--no-pretrained", "--quiet"]  # random EfficientNet-Lite0 weights: fast, offline, enough for names


def photo(path: Path, source: str = "coffee.png", size: tuple[int, int] | None = (96, 64)) -> Path:
    """A copy of a bundled photo (smaller by default), in any format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(ASSETS / source) as image:
        rgb = image.convert("RGB")
        (rgb.resize(size) if size else rgb).save(path)
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("camkit: error:"), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command loads a model: its arguments must be refused before that."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(camkit.cli, "load_model", refuse)
    monkeypatch.setattr(camkit.cli, "load_checkpoint", refuse)


# --- 1. output names never collide ------------------------------------------------------------


def test_same_stem_keeps_the_extension_and_the_count_is_the_files_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo(tmp_path / "dup2" / "x.jpg", "rocket.jpg")
    photo(tmp_path / "dup2" / "x.png")
    photo(tmp_path / "dup2" / "y.png")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "dup2"), "--out", str(out), "--class", "3", *RANDOM]) == 0
    stdout = capsys.readouterr().out
    assert files_under(out) == [
        "predictions.csv",
        "predictions.json",
        "x.jpg_gradcam_3.npy",
        "x.jpg_gradcam_3.png",
        "x.png_gradcam_3.npy",
        "x.png_gradcam_3.png",
        "y_gradcam_3.npy",  # no other y: no extension
        "y_gradcam_3.png",
    ]
    assert "wrote 3 overlays (.png), 3 raw maps (.npy), predictions.csv and predictions.json" in stdout
    assert "x.jpg: " in stdout
    assert "x.png: " in stdout


def test_output_folders_mirror_the_input_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo(tmp_path / "dup" / "a" / "img.jpg")
    photo(tmp_path / "dup" / "b" / "img.jpg", "rocket.jpg")
    photo(tmp_path / "dup" / "b" / "deeper" / "more.png")
    photo(tmp_path / "dup" / ".hidden" / "skip.png")  # hidden folders are not searched
    one = tmp_path / "one"
    assert main(["explain", str(tmp_path / "dup"), "--out", str(one), "--class", "1", *RANDOM]) == 0
    assert [f for f in files_under(one) if f.endswith(".png")] == [
        "a/img_gradcam_1.png",
        "b/deeper/more_gradcam_1.png",
        "b/img_gradcam_1.png",
    ]
    printed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert printed == ["a/img.jpg", "b/img.jpg", "b/deeper/more.png"]  # sorted: a folder's files, then sub-folders
    # two folders given: each one's files under its own name, nothing lost
    two = tmp_path / "two"
    args = ["explain", str(tmp_path / "dup" / "a"), str(tmp_path / "dup" / "b"), "--out", str(two)]
    assert main([*args, "--class", "1", "--method", "gradcam", "--method", "layercam", *RANDOM]) == 0
    written = files_under(two)
    assert "a/img_grid.png" in written
    assert "b/img_grid.png" in written
    assert "a/img_layercam_1.npy" in written
    assert "b/deeper/more_gradcam_1.png" in written
    assert "wrote 6 overlays (.png), 6 raw maps (.npy), 3 grids (.png)" in capsys.readouterr().out


def test_a_second_run_does_not_explain_the_first_ones_overlays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo(tmp_path / "cup.png")
    args = ["explain", str(tmp_path), "--out", str(tmp_path / "camkit-out"), "--class", "1", *RANDOM]
    assert main(args) == 0
    assert main(args) == 0
    assert capsys.readouterr().out.count("cup.png: ") == 2  # the only image, both times
    assert [f for f in files_under(tmp_path / "camkit-out") if f.endswith(".png")] == ["cup_gradcam_1.png"]


def test_a_collision_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    first = photo(tmp_path / "a" / "img.jpg")
    second = photo(tmp_path / "b" / "img.jpg")
    out = tmp_path / "out"
    assert main(["explain", str(first), str(second), "--out", str(out), *RANDOM]) == 1
    one_line_error(capsys, str(first), str(second), "would write the same files", "rename one")
    assert not out.exists()


def test_output_bases_rule() -> None:
    assert output_bases(["a/img.jpg", "b/img.jpg", "x.jpg", "x.png", "a/x.png"]) == [
        "a/img",
        "b/img",
        "x.jpg",
        "x.png",
        "a/x",  # another folder: no collision with x.*
    ]
    assert output_bases(["../up/./a.png"]) == ["up/a"]  # stays inside the output folder
    with pytest.raises(ValueError, match=r"'one' and 'two' would write the same files \(x.png_"):
        output_bases(["x.png", "x.png"], ["one", "two"])


# --- 2 and 3. predictions.csv/.json, and grids with every explained class ------------------------


def test_predictions_files_and_grids_with_every_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = photo(tmp_path / "in" / "cup.png")
    out = tmp_path / "out"
    assert main(["explain", str(image), "--out", str(out), "--topk", "3", *RANDOM]) == 0
    capsys.readouterr()
    document = json.loads((out / "predictions.json").read_text())
    assert "efficientnet_lite0" in document["model"]
    assert document["methods"] == ["gradcam"]
    (entry,) = document["images"]
    assert entry["image"] == str(image)
    assert entry["error"] is None
    assert [p["rank"] for p in entry["top"]] == [1, 2, 3, 4, 5]
    probabilities = [p["probability"] for p in entry["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert [e["class"] for e in entry["explained"]] == [p["class"] for p in entry["top"][:3]]
    for explained in entry["explained"]:
        assert (out / explained["overlays"]["gradcam"]).is_file()
        assert explained["name"] == next(p["name"] for p in entry["top"] if p["class"] == explained["class"])
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["rank"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert [row["explained"] for row in rows] == ["1", "1", "1", "0", "0"]
    assert rows[0]["name"] == entry["top"][0]["name"]
    assert float(rows[0]["probability"]) == pytest.approx(entry["top"][0]["probability"], abs=1e-6)
    # one method, three classes: a grid of three rows (image and overlay per explained class)
    with Image.open(out / entry["grid"]) as three_rows:
        height = three_rows.height
    again = tmp_path / "again"
    methods = ["--method", "gradcam", "--method", "layercam"]
    assert main(["explain", str(image), "--out", str(again), *methods, *RANDOM]) == 0
    with Image.open(again / "cup_grid.png") as one_row:
        assert height - one_row.height == 2 * (224 + 8)  # two more rows of 224 px cells and 8 px padding


def test_a_given_class_outside_the_top_is_recorded_with_its_rank(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = photo(tmp_path / "cup.png")
    out = tmp_path / "out"
    assert main(["explain", str(image), "--out", str(out), "--class", "0", "--layer", "blocks.6", *RANDOM]) == 0
    capsys.readouterr()
    (entry,) = json.loads((out / "predictions.json").read_text())["images"]
    (explained,) = entry["explained"]
    assert explained["class"] == 0
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    marked = [row for row in rows if row["explained"] == "1"]
    assert [row["class"] for row in marked] == ["0"]
    assert int(marked[0]["rank"]) == explained["rank"]
    if explained["rank"] > 5:  # outside the top five: one more row, at its rank
        assert len(rows) == 6
        assert rows[-1]["class"] == "0"


# --- 4. folders: recursive, bad files skipped and reported ----------------------------------------


def test_bad_files_are_skipped_listed_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    photo(folder / "good.png")
    photo(folder / "sub" / "deep.jpg", "rocket.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    photo(folder / "sub" / "tiny.png", size=(8, 8))  # explain refuses images this small
    (folder / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "out"
    args = ["explain", str(folder), "--out", str(out), "--class", "2", "--batch-size", "4", *RANDOM]
    assert main(args) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[0] == f"camkit: skipped {folder / 'broken.jpg'}: " + err[0].split(": ", 2)[2]
    assert "cannot read" in err[0]
    assert err[1].startswith(f"camkit: skipped {folder / 'sub' / 'tiny.png'}: ")
    assert err[2].startswith("camkit: error: 2 of 4 images were skipped (listed above); the other 2 were written")
    assert len(err) == 3
    assert "Traceback" not in captured.err
    assert "wrote 2 overlays" in captured.out
    assert [f for f in files_under(out) if f.endswith(".png")] == ["good_gradcam_2.png", "sub/deep_gradcam_2.png"]
    with (out / "predictions.csv").open(newline="") as handle:
        errors = {row["image"]: row["error"] for row in csv.DictReader(handle) if row["error"]}
    assert sorted(errors) == [str(folder / "broken.jpg"), str(folder / "sub" / "tiny.png")]


def test_when_no_image_can_be_read_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (tmp_path / "b.png").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out", str(out), *RANDOM]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in err] == ["camkit"] * 3
    assert err[-1].startswith("camkit: error: none of the 2 images could be used (listed above)")
    assert not out.exists()


# --- 5. --full-image ------------------------------------------------------------------------------


def test_full_image_map_places_the_crop_and_leaves_the_rest_cold() -> None:
    cam = torch.rand(7, 7)
    full = full_image_map(cam, (600, 400), Preprocess(256, 224))
    assert full.shape == (400, 600)
    # 600x400 -> 384x256, crop 224 at (80, 16): columns 125..474 and rows 25..374 of the original
    inside = full[25:375, 125:475]
    assert inside.min() >= 0
    assert inside.max() <= 1
    assert float(inside.mean()) > 0
    assert float(full[:, :125].abs().max()) == 0.0
    assert float(full[:, 475:].abs().max()) == 0.0
    assert float(full[:25].abs().max()) == 0.0
    assert float(full[375:].abs().max()) == 0.0
    flat = full_image_map(torch.full((7, 7), 0.25), (600, 400), Preprocess(256, 224))
    torch.testing.assert_close(flat[25:375, 125:475], torch.full((350, 350), 0.25))


def test_full_image_overlays_keep_the_original_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = photo(tmp_path / "wide.jpg", "rocket.jpg", size=(600, 400))
    crop, full = tmp_path / "crop", tmp_path / "full"
    args = ["explain", str(image), "--class", "657", "--quiet"]  # the pretrained model: smooth maps
    assert main([*args, "--out", str(crop)]) == 0
    assert main([*args, "--out", str(full), "--full-image"]) == 0
    capsys.readouterr()
    with Image.open(full / "wide_gradcam_657.png") as overlay:
        assert overlay.size == (600, 400)
    big = np.load(full / "wide_gradcam_657.npy")
    small = np.load(crop / "wide_gradcam_657.npy")
    assert big.shape == (400, 600)
    assert small.shape == (224, 224)
    assert json.loads((full / "predictions.json").read_text())["full_image"] is True
    # the model's own preprocessing, applied to the full map, gives back the map of its input
    as_image = Image.fromarray(np.round(big * 255).astype(np.uint8)).convert("RGB")
    seen = np.asarray(Preprocess(256, 224).view(as_image), dtype=np.float32)[..., 0] / 255
    assert float(np.abs(seen - small).mean()) < 0.005  # a crop misplaced by 3 px: about 0.02


# --- 6. errors: one line naming the fix, before any work -----------------------------------------


def test_output_paths_are_checked_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    image = str(photo(tmp_path / "cup.png"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["explain", image, "--out", str(blocker), *RANDOM]) == 1
    one_line_error(capsys, "--out", "is a file, not a folder")
    assert main(["explain", image, "--out", str(blocker / "below"), *RANDOM]) == 1
    one_line_error(capsys, "--out", "which is a file")
    assert main(["report", image, "--out", str(blocker / "report.html"), *RANDOM]) == 1
    one_line_error(capsys, "--out", "which is a file")
    assert main(["report", image, "--out", str(tmp_path), *RANDOM]) == 1
    one_line_error(capsys, "is a folder: name the file to write", "report.html")
    assert main(["run", str(tmp_path), "--out", str(blocker), "--no-pretrained", "--quiet"]) == 1
    one_line_error(capsys, "--out", "is a file, not a folder")
    assert main(["export", str(tmp_path), "--out", str(blocker), "--quiet"]) == 1
    one_line_error(capsys)  # no store in tmp_path: that comes first, as one line


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--colormap", "nope"], ["--colormap 'nope' is not a known colormap", "camkit.viz.list_colormaps()"]),
        (["--colormap", "viridsi"], ["did you mean 'viridis'"]),
        (["--alpha", "1.5"], ["--alpha must be in [0, 1)"]),
        (["--device", "meta"], ["'meta' holds no data", "--device cpu"]),
        (["--device", "cuda:x"], ["'cuda:x' is not a device name"]),
        (["--topk", "0"], ["--topk must be at least 1"]),
    ],
)
def test_bad_arguments_are_refused_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None, extra: list[str], needles: list[str]
) -> None:
    image = str(photo(tmp_path / "cup.png"))
    assert main(["explain", image, "--out", str(tmp_path / "out"), *RANDOM, *extra]) == 1
    line = one_line_error(capsys, *needles)
    assert len(line) < 300
    assert not (tmp_path / "out").exists()


def test_report_checks_its_arguments_before_computing_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    image = str(photo(tmp_path / "cup.png"))
    assert main(["report", image, "--out", str(tmp_path / "r.html"), "--metrics-steps", "-1", *RANDOM]) == 1
    one_line_error(capsys, "--metrics-steps")
    assert main(["report", image, "--out", str(tmp_path / "r.html"), "--colormap", "nope", *RANDOM]) == 1
    one_line_error(capsys, "--colormap")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda is usable")
def test_cuda_without_a_gpu_is_one_line_for_run_and_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo(tmp_path / "images" / "cup.png")
    run = ["run", str(tmp_path / "images"), "--out", str(tmp_path / "store"), "--no-pretrained", "--quiet"]
    assert main([*run, "--device", "cuda"]) == 1
    one_line_error(capsys, "'cuda' is not usable here", "--device cpu")
    assert not (tmp_path / "store").exists()
    assert main(["explain", str(tmp_path / "images"), "--device", "cuda:1", *RANDOM]) == 1
    one_line_error(capsys, "'cuda:1' is not usable here", "--device cpu")


def test_run_refuses_the_meta_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo(tmp_path / "images" / "cup.png")
    run = ["run", str(tmp_path / "images"), "--out", str(tmp_path / "store"), "--no-pretrained", "--quiet"]
    assert main([*run, "--device", "meta"]) == 1
    one_line_error(capsys, "'meta' holds no data")
    assert main(["layers", "--no-pretrained", "--device", "meta"]) == 1
    one_line_error(capsys, "'meta' holds no data")


# --- 7. the API's layer suggestions, with the `camkit layers` hint --------------------------------


def test_unknown_layer_keeps_the_suggestions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(photo(tmp_path / "cup.png"))
    assert main(["explain", image, "--layer", "conv_hed", "--out", str(tmp_path / "out"), *RANDOM]) == 1
    line = one_line_error(capsys, "--layer 'conv_hed'", "did you mean 'conv_head'")
    assert line.endswith("List them with: camkit layers --model efficientnet_lite0 --no-pretrained")
    assert "layer4" not in line
    assert "named_modules" not in line  # the Python hint is replaced by the command
    assert main(["explain", image, "--layer", "blocks.9.conv", *RANDOM]) == 1
    one_line_error(capsys, "did you mean 'blocks.6.0.conv_pw'", "camkit layers --model efficientnet_lite0")
    photo(tmp_path / "images" / "cup.png")
    run = ["run", str(tmp_path / "images"), "--out", str(tmp_path / "store"), "--no-pretrained", "--quiet"]
    assert main([*run, "--layer", "bn3", "--workers", "0"]) == 1
    one_line_error(capsys, "--layer 'bn3'", "did you mean 'bn2'", "camkit layers --model efficientnet_lite0")


# --- 8. `camkit layers` shows the shape of a layer's last call -----------------------------------


def test_candidate_layers_report_the_last_call() -> None:
    pool = nn.MaxPool2d(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), pool, nn.ReLU())
    net.add_module("again", nn.Sequential(pool))  # the same pool, called a second time
    shapes = candidate_layers(net, (3, 16, 16))
    names = [name for name, _ in shapes]
    assert len(names) == len(set(names))  # each layer once
    assert dict(shapes)["1"] == (1, 4, 4, 4)  # its last call: 8x8 -> 4x4 (the first gave 8x8)
    assert names.index("1") > names.index("2")  # at the place of its last call


def test_layers_command_shows_last_call_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["layers", "--model", "torchvision:resnet50", "--no-pretrained", "--input-size", "64"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    relu = [line.split() for line in lines if line.startswith("layer1.0.relu ")]
    assert relu == [["layer1.0.relu", "256x16x16"]]  # called three times: 64, 64, then 256 channels


# --- export: the same names, checked before writing ----------------------------------------------


def test_export_keeps_extensions_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo(tmp_path / "images" / "x.jpg", "rocket.jpg")
    photo(tmp_path / "images" / "x.png")
    store = tmp_path / "store"
    model = ["--model", "torchvision:resnet18", "--no-pretrained", "--workers", "0", "--quiet"]
    assert main(["run", str(tmp_path / "images"), "--out", str(store), "--target", "class:4", *model]) == 0
    drawn = tmp_path / "drawn"
    assert main(["export", str(store), "--out", str(drawn), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote 2 overlays (.png) to {drawn}/")
    assert files_under(drawn) == ["x.jpg_gradcam_4.png", "x.png_gradcam_4.png"]
    assert main(["export", str(store), "--out", str(tmp_path / "more"), "--colormap", "nope", "--quiet"]) == 1
    one_line_error(capsys, "--colormap 'nope'")
    assert not (tmp_path / "more").exists()


def test_check_out_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper"
    assert check_out(target) == target
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"inside .*file.*which is a file"):
        check_out(tmp_path / "file" / "report.html", file=True)
