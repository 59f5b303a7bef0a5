"""`camkit run --metric`: per-record metric values in the store, read back, shown and sorted by the viewer."""

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
from camkit.metrics import confidence_change, deletion
from camkit.models import LoadedModel, Preprocess
from camkit.runner.scores import METRIC_STEPS
from camkit.viewer import Filters, open_source

METHODS = ["gradcam", "layercam"]


def tiny() -> LoadedModel:
    return LoadedModel(tiny_net(), "tiny", Preprocess(32, 32), categories=None, target_layer="2")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scores")
    make_images(root / "images", 9)
    out = root / "store"
    report = camkit.run(
        root / "images", out, METHODS, tiny(), metrics=["drop", "deletion"], batch_size=4, workers=0, progress=False
    )
    assert report.computed == 9
    return out


def test_stored_values_are_the_metrics_of_the_stored_maps(store: Path) -> None:
    loaded = tiny()
    with camkit.open_store(store) as opened:
        assert opened.options["metrics"] == ["drop", "deletion"]
        root = opened.root
        assert root is not None
        for key in list(opened)[:3]:
            record = opened[key]
            assert set(record.metrics) == set(METHODS)
            x = loaded.preprocess.to_tensor(loaded.preprocess.view(Image.open(root / key).convert("RGB")))[None]
            for method in METHODS:
                cam = record.maps[method][None]
                target = [int(record.target)]  # type: ignore[arg-type]
                drop = confidence_change(loaded.model, x, cam, target).drop.per_sample[0].item()
                area = deletion(loaded.model, x, cam, target, steps=METRIC_STEPS, baseline=0.0, progress=False)
                assert record.metrics[method]["drop"] == pytest.approx(drop, abs=1e-4)
                assert record.metrics[method]["deletion"] == pytest.approx(area.per_sample[0].item(), abs=1e-4)


def test_viewer_sorts_by_a_stored_metric(store: Path) -> None:
    source = open_source(store)
    info = source.info()
    columns = ["gradcam:drop", "gradcam:deletion", "layercam:drop", "layercam:deletion"]
    assert info["metrics"] == columns
    with camkit.open_store(store) as opened:
        values = {key: opened[key].metrics["layercam"]["deletion"] for key in opened}
    expected = sorted(values, key=lambda k: (-values[k], k))
    _, page = source.page(Filters(sort="metric", metric="layercam:deletion", descending=True), 0, 50)
    assert [r["key"] for r in page] == expected
    assert page[0]["metrics"]["layercam"]["deletion"] == max(values.values())
    _, first = source.page(Filters(sort="metric", metric="layercam:deletion"), 2, 3)  # paged, ascending
    assert [r["key"] for r in first] == expected[::-1][2:5]
    mean = info["summary"]["values"]["layercam"]["deletion"]
    assert mean == pytest.approx(sum(values.values()) / len(values))
    # an unknown column sorts by name
    _, named = source.page(Filters(sort="metric", metric="gradcam:nope"), 0, 50)
    assert [r["key"] for r in named] == sorted(values)
    with serving(store) as server:
        query = "/api/records?limit=4&sort=metric&metric=layercam%3Adeletion&order=desc"
        with urllib.request.urlopen(server.url.rstrip("/") + query, timeout=10) as reply:
            answer = json.load(reply)
    assert answer["total"] == 9
    assert [r["key"] for r in answer["records"]] == expected[:4]


def test_a_resumed_run_must_ask_for_the_same_metrics(store: Path) -> None:
    folder = store.parent / "images"
    with pytest.raises(ValueError, match=r"metrics: store \["):
        camkit.run(folder, store, METHODS, tiny(), metrics=["drop"], workers=0, progress=False)
    with pytest.raises(ValueError, match="metric 'dorp' is not known; did you mean 'drop'"):
        camkit.run(folder, store, METHODS, tiny(), metrics=["dorp"], workers=0, progress=False)
    # the same metrics: nothing to compute
    again = camkit.run(folder, store, METHODS, tiny(), metrics=["drop", "deletion"], workers=0, progress=False)
    assert (again.computed, again.skipped) == (0, 9)


def test_cli_run_with_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchvision.models import resnet18

    from camkit.cli import main

    make_images(tmp_path / "images", 4)
    torch.manual_seed(0)
    torch.save(resnet18(num_classes=10).state_dict(), tmp_path / "resnet18.pt")
    out = tmp_path / "store"
    args = ["run", str(tmp_path / "images"), "--out", str(out), "--model", "torchvision:resnet18"]
    args += ["--checkpoint", str(tmp_path / "resnet18.pt"), "--workers", "0", "--quiet", "--metric", "increase"]
    assert main(args) == 0, capsys.readouterr().err
    with camkit.open_store(out) as opened:
        assert opened.options["metrics"] == ["increase"]
        assert all(opened[k].metrics["gradcam"]["increase"] in (0.0, 1.0) for k in opened)
    with pytest.raises(SystemExit):
        main([*args, "--metric", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_a_part_from_before_the_metrics_column_is_extended(tmp_path: Path) -> None:
    import sqlite3

    import numpy as np

    from camkit.runner.writer import PartWriter, RecordRow, prepare_store

    out = tmp_path / "store"
    prepare_store(out, {"methods": ["gradcam"]}, {}, overwrite=False)
    part = out / "parts" / "rank-00000"
    part.mkdir(parents=True)
    old = sqlite3.connect(part / "manifest.sqlite")
    old.executescript(
        "CREATE TABLE shards (name TEXT PRIMARY KEY, layout TEXT NOT NULL, dtype TEXT NOT NULL, rows INTEGER NOT NULL);"
        "CREATE TABLE records (key TEXT PRIMARY KEY, status TEXT NOT NULL, shard TEXT, row INTEGER, label INTEGER,"
        " target TEXT, pred TEXT, height INTEGER, width INTEGER, reason TEXT);"
    )
    old.close()
    with PartWriter(out, 0) as writer:
        writer.commit(
            [RecordRow("a.png", None, [0], [(0, 0.9)], 8, 8)], np.ones((1, 4), np.float32), [("gradcam", 1, 2, 2)]
        )
    with camkit.open_store(out) as opened:
        assert opened["a.png"].metrics == {}
