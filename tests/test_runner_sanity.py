"""`camkit run --sanity`: the model-randomisation verdicts in the store's metadata, as the viewer serves them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

import camkit
from _runner_common import make_images, tiny_net
from _viewer_common import serving
from camkit.models import LoadedModel, Preprocess
from camkit.runner.store import META
from camkit.sanity import ModelRandomization, model_randomization
from camkit.viewer import open_source

METHODS = ["gradcam", "layercam"]
IMAGES = 3


def tiny() -> LoadedModel:
    return LoadedModel(tiny_net(), "tiny", Preprocess(32, 32), categories=None, target_layer="2")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sanity")
    make_images(root / "images", 6)
    out = root / "store"
    report = camkit.run(
        root / "images",
        out,
        METHODS,
        tiny(),
        sanity=True,
        sanity_images=IMAGES,
        batch_size=4,
        workers=0,
        progress=False,
    )
    assert report.computed == 6
    assert report.sanity is not None
    assert "sanity (cascading model randomisation, 3 images): gradcam " in report.summary()
    return out


def direct(root: Path, keys: list[str], mode: str = "cascading") -> ModelRandomization:
    """model_randomization called by hand on the same images, model and settings."""
    loaded = tiny()
    x = torch.stack([loaded.preprocess(Image.open(root / key).convert("RGB")) for key in keys])
    return model_randomization(loaded, x, METHODS, mode=mode, keep_maps=False, progress=False)


def test_the_store_holds_the_verdicts_of_model_randomization(store: Path) -> None:
    with camkit.open_store(store) as opened:
        entry = opened.sanity
        root = opened.root
        keys = list(opened)
    assert root is not None
    assert entry["check"] == "model_randomization"
    assert entry["settings"] == {
        "images": IMAGES,
        "mode": "cascading",
        "threshold": 0.5,
        "similarity": ["spearman", "ssim", "hog_pearson"],
        "seed": 0,
    }
    assert entry["images"] == keys[:IMAGES]  # the first images of the source, in its order
    expected = direct(root, entry["images"])
    assert entry["layers"] == expected.layers
    assert entry["classes"] == expected.classes.tolist()
    assert set(entry["methods"]) == set(METHODS)
    for j, method in enumerate(METHODS):
        stored = entry["methods"][method]
        assert stored["passed"] == expected.passed[method]
        assert stored["similarity"] == pytest.approx(expected.scores[method], abs=1e-6)
        for measure, values in expected.similarity.items():
            assert stored["per_image"][measure] == pytest.approx(values[-1, :, j].tolist(), abs=1e-6)


def test_a_resumed_run_keeps_the_verdicts_and_other_settings_replace_them(store: Path, tmp_path: Path) -> None:
    images = store.parent / "images"
    meta = json.loads((store / META).read_text())
    again = camkit.run(images, store, METHODS, tiny(), sanity=True, sanity_images=IMAGES, workers=0, progress=False)
    assert (again.computed, again.skipped) == (0, 6)
    assert again.sanity == meta["sanity"]
    assert json.loads((store / META).read_text()) == meta  # not recomputed, not rewritten
    # a run without --sanity leaves them
    camkit.run(images, store, METHODS, tiny(), workers=0, progress=False)
    assert camkit.open_store(store).sanity == meta["sanity"]
    # the check on a copy of the store with other settings: recomputed, with chunks of the batch size
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    other = camkit.run(
        images,
        copy,
        METHODS,
        tiny(),
        sanity=True,
        sanity_images=5,
        sanity_mode="independent",
        batch_size=2,
        workers=0,
        progress=False,
    )
    assert other.computed == 0
    entry = camkit.open_store(copy).sanity
    assert entry["settings"]["images"] == 5
    assert entry["settings"]["mode"] == "independent"
    expected = direct(images, entry["images"], "independent")  # one call on all five = three chunked calls
    for method in METHODS:
        assert entry["methods"][method]["passed"] == expected.passed[method]
        assert entry["methods"][method]["similarity"] == pytest.approx(expected.scores[method], abs=1e-5)
    with pytest.raises(ValueError, match="sanity_images must be a positive int"):
        camkit.run(images, copy, METHODS, tiny(), sanity=True, sanity_images=0, workers=0, progress=False)
    with pytest.raises(ValueError, match="sanity_mode must be one of cascading, independent"):
        camkit.run(images, copy, METHODS, tiny(), sanity=True, sanity_mode="nope", workers=0, progress=False)


def test_the_viewer_serves_the_verdicts(store: Path) -> None:
    with camkit.open_store(store) as opened:
        entry = opened.sanity
    info = open_source(store).info()
    assert set(info["sanity"]) == set(METHODS)
    for method in METHODS:
        shown = info["sanity"][method]
        assert shown["passed"] == entry["methods"][method]["passed"]
        assert shown["similarity"] == entry["methods"][method]["similarity"]
        assert shown["title"].startswith(f"sanity {'pass' if shown['passed'] else 'fail'} (cascading")
        assert "SSIM" in shown["title"]
    assert info["summary"]["sanity"] == info["sanity"]
    assert info["sanity_note"].startswith("sanity: cascading model randomisation (camkit run --sanity) on 3 images")
    with serving(store) as server, urllib.request.urlopen(server.url + "api/info", timeout=10) as reply:
        served = json.load(reply)
    assert served["sanity"] == info["sanity"]


def test_cli_run_with_sanity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from camkit.cli import main

    make_images(tmp_path / "images", 3)
    out = tmp_path / "store"
    args = ["run", str(tmp_path / "images"), "--out", str(out), "--model", "torchvision:resnet18", "--no-pretrained"]
    args += ["--workers", "0", "--quiet", "--sanity", "--sanity-images", "2"]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "sanity (cascading model randomisation, 2 images): gradcam " in printed
    with camkit.open_store(out) as opened:
        assert len(opened.sanity["images"]) == 2
        assert set(opened.sanity["methods"]) == {"gradcam"}
    with pytest.raises(SystemExit):
        main([*args, "--sanity-images", "0"])
    assert "expected a whole number >= 1" in capsys.readouterr().err
