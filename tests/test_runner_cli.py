"""`camkit run` and `camkit export` end to end on a tiny folder (a ResNet-18 checkpoint, 10 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet18

import camkit
from _runner_common import make_images
from camkit.cli import main
from camkit.models import load_checkpoint
from camkit.viz import overlay_mask


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    make_images(root / "images", 6)
    (root / "images" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    torch.manual_seed(0)
    torch.save(resnet18(num_classes=10).state_dict(), root / "resnet18.pt")
    return {"root": root, "images": root / "images", "checkpoint": root / "resnet18.pt"}


def _run_args(ws: dict[str, Path], out: Path, *extra: str) -> list[str]:
    model = ["--model", "torchvision:resnet18", "--checkpoint", str(ws["checkpoint"])]
    return ["run", str(ws["images"]), "--out", str(out), *model, "--batch-size", "4", "--quiet", *extra]


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("camkit: error:")
    for needle in needles:
        assert needle in err[0], err[0]


def test_run_then_export(workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    args = _run_args(workspace, store, "--method", "gradcam", "--method", "layercam", "--target", "topk:2")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("camkit run: 6 computed, 0 skipped (already in the store), 1 failed;")
    assert "failed: dog/broken.jpg: ValueError: cannot read" in out
    opened = camkit.open_store(store)
    assert opened.options["model"] == "torchvision:resnet18@resnet18.pt"
    assert opened.options["layer"] == ["layer4"]
    keys = list(opened)
    loaded = load_checkpoint(workspace["checkpoint"], "torchvision:resnet18")
    reference = camkit.explain(loaded, [workspace["images"] / k for k in keys], ["gradcam", "layercam"], topk=2)
    for i, key in enumerate(keys):
        record = opened[key]
        assert record.maps["gradcam"].shape == (2, 7, 7)  # layer4 of a 224 px input, two classes
        assert record.target == tuple(reference.classes[i].tolist())
        for name, maps in record.resized().items():
            torch.testing.assert_close(maps, reference.maps[name][i], atol=1e-5, rtol=0)
    # the same command again computes nothing
    assert main(args) == 0
    assert "0 computed, 7 skipped (already in the store; 1 of them had failed" in capsys.readouterr().out
    drawn = tmp_path / "drawn"
    assert main(["export", str(store), "--out", str(drawn), "--method", "layercam", "--alpha", "0.3", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 12 overlays (.png) to {drawn}/"
    record = opened["cat/002.png"]
    second = record.target[1]
    written = Image.open(drawn / "cat" / f"002_layercam_{second}.png")
    view = loaded.preprocess.view(Image.open(workspace["images"] / "cat" / "002.png"))
    expected = overlay_mask(view, record.resized()["layercam"][1], "jet", 0.3)
    assert written.size == (224, 224)
    assert np.array_equal(np.asarray(written), np.asarray(expected))
    assert len(list(drawn.rglob("*.png"))) == 12


def test_run_refuses_other_options_then_overwrites(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert main(_run_args(workspace, store, "--workers", "0")) == 0
    capsys.readouterr()
    assert main(_run_args(workspace, store, "--workers", "0", "--method", "layercam", "--dtype", "float16")) == 1
    _one_line_error(capsys, 'dtype: store "float32", this run "float16"', 'methods: store ["gradcam"]', "--overwrite")
    assert main(_run_args(workspace, store, "--method", "layercam", "--dtype", "float16", "--overwrite")) == 0
    assert capsys.readouterr().out.startswith("camkit run: 6 computed, 0 skipped")
    assert camkit.open_store(store).methods == ["layercam"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--target", "top:3"], "expected label, pred, topk:K or class:C"),
        (["--batch-size", "0"], "expected a whole number >= 1"),
        (["--workers", "-1"], "expected a whole number >= 0"),
        (["--dtype", "float64"], "invalid choice: 'float64'"),
        (["--method", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_arguments_exit_2(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(_run_args(workspace, tmp_path / "store", *extra))
    assert caught.value.code == 2
    _one_line_error(capsys, needle, "(see camkit run --help)")


def test_unusable_inputs_exit_1(workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "missing"), "--out", str(tmp_path / "store"), "--quiet"]) == 1
    _one_line_error(capsys, "source folder", "does not exist")
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "png")]) == 1
    _one_line_error(capsys, "no camkit store at", "pass the --out of a camkit run")
    store = tmp_path / "store"
    assert main(_run_args(workspace, store, "--workers", "0", "--target", "class:3")) == 0
    capsys.readouterr()
    assert main(["export", str(store), "--out", str(tmp_path / "png"), "--method", "scorecam"]) == 1
    _one_line_error(capsys, "['scorecam'] are not in store", "['gradcam']")
    assert main(["export", str(store), "--out", str(tmp_path / "png"), "--source", str(tmp_path / "gone")]) == 1
    _one_line_error(capsys, "does not exist", "--source DIR")
    assert main(_run_args(workspace, tmp_path / "s2", "--workers", "0", "--target", "class:10")) == 1
    _one_line_error(capsys, "target class:10 is out of range: the model has 10 classes")
