"""`camkit run --layer-maps`: each target layer's map stored on its own, and the viewer's layer switch."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camkit
from _runner_common import make_images, tiny_net
from _viewer_common import serving
from camkit.models import LoadedModel, Preprocess
from camkit.viewer import open_source, source_page
from camkit.viz.page import heatmap_png

METHODS = ["gradcam", "layercam"]
LAYERS = ["0", "2"]


def tiny() -> LoadedModel:
    return LoadedModel(tiny_net(), "tiny", Preprocess(32, 32), categories=None, target_layer="2")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    make_images(root / "images", 5)
    out = root / "store"
    camkit.run(root / "images", out, METHODS, tiny(), layer=LAYERS, layer_maps=True, workers=0, progress=False)
    return out


def test_each_layer_map_is_the_method_at_that_layer_alone(store: Path) -> None:
    loaded = tiny()
    with camkit.open_store(store) as opened:
        assert opened.options["layer_maps"] is True
        root = opened.root
        assert root is not None
        key = next(iter(opened))
        record = opened[key]
        assert set(record.layer_maps) == set(LAYERS)
        image = root / key
        for layer in LAYERS:
            alone = camkit.explain(loaded, [image], METHODS, target_layer=layer)
            assert set(record.layer_maps[layer]) == set(METHODS)
            for method in METHODS:
                assert record.target == int(alone.classes[0, 0])
                torch.testing.assert_close(
                    record.layer_maps[layer][method], alone.maps[method][0, 0], atol=1e-5, rtol=0
                )
        both = camkit.explain(loaded, [image], METHODS, target_layer=LAYERS)
        torch.testing.assert_close(record.maps["gradcam"], both.maps["gradcam"][0, 0], atol=1e-5, rtol=0)


def test_viewer_serves_each_layer(store: Path) -> None:
    source = open_source(store)
    assert source.layers == LAYERS
    assert source.info()["layers"] == LAYERS
    key = next(iter(camkit.open_store(store)))
    record = camkit.open_store(store)[key]
    with serving(store) as server:
        base = server.url.rstrip("/")
        with urllib.request.urlopen(f"{base}/api/records?limit=1", timeout=10) as reply:
            first = __import__("json").load(reply)["records"][0]
        assert set(first["layer_maps"]) == set(LAYERS)
        url = first["layer_maps"]["0"]["layercam"][0]
        assert url.endswith("&layer=0")
        with urllib.request.urlopen(base + url, timeout=10) as reply:
            shown = np.asarray(Image.open(io.BytesIO(reply.read())))
    expected = heatmap_png(record.layer_maps["0"]["layercam"], (32, 32), "jet")
    assert np.array_equal(shown, np.asarray(Image.open(io.BytesIO(expected))))
    assert source.map_png(key, "gradcam", 0, "nope") is None
    page = source_page(source)
    assert page.count("data:image/png;base64,") >= 1 + 5 * (1 + len(METHODS) * (1 + len(LAYERS)))


def test_export_writes_each_layer_and_the_cli_takes_the_flag(store: Path, tmp_path: Path) -> None:
    from camkit.cli import build_parser
    from camkit.viewer import export_site

    assert export_site(open_source(store), tmp_path / "site") == 5
    names = sorted(p.name for p in (tmp_path / "site" / "maps" / "000000").iterdir())
    assert names == ["00-00.png", "01-00.png", "L00-00-00.png", "L00-01-00.png", "L01-00-00.png", "L01-01-00.png"]
    args = build_parser().parse_args(["run", "images", "--out", "store", "--layer-maps", "--metric", "drop"])
    assert args.layer_maps is True
    assert args.metric == ["drop"]
