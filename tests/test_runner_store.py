"""camkit.run / camkit.open_store in one process: the numbers stored, bad data, options, snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camkit
from _runner_common import assert_same_store, make_images, tiny_model, tiny_net
from camkit.runner.store import PARTS, Store
from camkit.runner.writer import PartWriter

METHODS = ["gradcam", "layercam"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_images(tmp_path / "images", 12)
    return tmp_path / "images"


def _run(source, out, **options):
    options = {"methods": METHODS, "model": tiny_model(), "batch_size": 4, "workers": 0, "progress": False, **options}
    return camkit.run(source, out, **options)


def _gradcam64(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the top class at the tiny net's layer "2", re-derived in float64; and the softmax."""
    net = tiny_net().double()
    a = net[:3](x.double()).detach().requires_grad_(True)
    logits = net[3:](a)
    probabilities = logits.softmax(dim=1)
    top = int(logits.argmax(dim=1))
    (grad,) = torch.autograd.grad(logits[0, top], a)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * a).sum(dim=1))[0]
    return (cam - cam.min()) / (cam.max() - cam.min()), probabilities[0].detach()


def test_maps_predictions_and_targets_match_a_float64_rederivation(folder: Path, tmp_path: Path) -> None:
    report = _run(folder, tmp_path / "store")
    assert (report.computed, report.skipped, report.failed) == (12, 0, [])
    store = camkit.open_store(tmp_path / "store")
    key = "dog/003.png"
    record = store[key]
    x = tiny_model().preprocess(Image.open(folder / key)).unsqueeze(0)
    cam, probabilities = _gradcam64(x)
    assert record.maps["gradcam"].shape == (32, 32)  # the target layer's resolution
    assert record.maps["gradcam"].dtype == torch.float32
    torch.testing.assert_close(record.maps["gradcam"].double(), cam, atol=1e-5, rtol=0)
    top = probabilities.topk(5)
    assert [c for c, _ in record.pred] == top.indices.tolist()
    np.testing.assert_allclose([p for _, p in record.pred], top.values.numpy(), atol=1e-6)
    assert record.target == top.indices[0].item()
    assert record.label == 1  # sorted sub-folders: cat = 0, dog = 1
    assert record.size == (32, 32)


def test_resized_maps_equal_camkit_explain_for_every_class_of_topk(folder: Path, tmp_path: Path) -> None:
    _run(folder, tmp_path / "store", target="topk:2", batch_size=5)
    store = camkit.open_store(tmp_path / "store")
    keys = ["cat/000.png", "dog/007.png"]
    reference = camkit.explain(tiny_model(), [folder / k for k in keys], METHODS, topk=2)
    for i, key in enumerate(keys):
        record = store[key]
        assert record.target == tuple(reference.classes[i].tolist())
        assert record.maps["layercam"].shape == (2, 32, 32)
        for name, maps in record.resized().items():
            torch.testing.assert_close(maps, reference.maps[name][i], atol=1e-5, rtol=0)


def test_float16_store_is_within_half_precision_of_float32(folder: Path, tmp_path: Path) -> None:
    _run(folder, tmp_path / "f32")
    _run(folder, tmp_path / "f16", dtype="float16")
    wide, half = camkit.open_store(tmp_path / "f32"), camkit.open_store(tmp_path / "f16")
    assert half.options["dtype"] == "float16"
    shard = next((tmp_path / "f16" / PARTS).glob("*/*.npy"))
    assert np.load(shard).dtype == np.float16
    for key in wide:
        for name in METHODS:
            difference = (wide[key].maps[name] - half[key].maps[name]).abs().max().item()
            assert 0 < difference <= 2**-11  # float16 rounding of values in [0, 1]


def test_corrupt_images_are_recorded_as_failed_and_not_retried(folder: Path, tmp_path: Path) -> None:
    (folder / "cat" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (folder / "dog" / "empty.png").write_bytes(b"")
    good = (folder / "cat" / "000.png").read_bytes()
    (folder / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    bad = ["cat/garbage.jpg", "dog/empty.png", "dog/truncated.png"]
    out = tmp_path / "store"
    report = _run(folder, out, batch_size=5)
    assert report.computed == 12
    assert [key for key, _ in report.failed] == bad
    reasons = dict(report.failed)
    assert "cannot identify image file" in reasons["cat/garbage.jpg"]
    assert "truncated" in reasons["dog/truncated.png"].lower()
    store = camkit.open_store(out)
    assert len(store) == 12
    assert sorted(store.failed) == bad
    assert all(k not in store for k in bad)
    with pytest.raises(KeyError, match="failed in the run"):
        store["cat/garbage.jpg"]
    again = _run(folder, out)  # a rerun does not retry them
    assert (again.computed, again.skipped, again.skipped_failed, again.failed) == (0, 15, 3, [])
    retried = _run(folder, out, retry_failed=True)  # still broken: failed again, with the reason
    assert (retried.computed, retried.skipped, [k for k, _ in retried.failed]) == (0, 12, bad)
    (folder / "cat" / "garbage.jpg").write_bytes(good)  # fixed
    fixed = _run(folder, out, retry_failed=True)
    assert (fixed.computed, len(fixed.failed)) == (1, 2)
    store = camkit.open_store(out)
    assert len(store) == 13
    assert sorted(store.failed) == bad[1:]
    torch.testing.assert_close(store["cat/garbage.jpg"].maps["gradcam"], store["cat/000.png"].maps["gradcam"])


def test_other_options_are_refused_naming_the_difference_unless_overwrite(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    _run(folder, out)
    with pytest.raises(ValueError, match=r'methods: store \["gradcam", "layercam"\], this run \["gradcam"\]') as caught:
        _run(folder, out, methods=["gradcam"])
    assert "--overwrite" in str(caught.value)
    with pytest.raises(ValueError, match=r'target: store "pred", this run "class:3"'):
        _run(folder, out, target="class:3")
    with pytest.raises(ValueError, match=r'dtype: store "float32", this run "float16"'):
        _run(folder, out, dtype="float16")
    other = tiny_model()
    with torch.no_grad():
        other.model[0].bias.add_(1)
    with pytest.raises(ValueError, match="weights: store"):
        _run(folder, out, model=other)
    report = _run(folder, out, methods=["gradcam"], target="class:3", overwrite=True)
    assert (report.computed, report.skipped) == (12, 0)
    store = camkit.open_store(out)
    assert store.methods == ["gradcam"]
    assert {store[k].target for k in store} == {3}
    assert all(list(store[k].maps) == ["gradcam"] for k in store)


def test_a_folder_that_is_not_a_store_is_never_overwritten(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a camkit store and not empty"):
        _run(folder, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"


def test_label_target_and_dataset_sources(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 32, 32, generator=generator) for _ in range(5)]
    items = [(images[0], 4), (images[1], 2), (images[2], None), ("not an image", 1), (images[4], torch.tensor(0))]
    keys = ["a", "b", "c", "d", "e"]
    report = _run(items, tmp_path / "store", keys=keys, target="label")
    assert report.computed == 3
    failed = dict(report.failed)
    assert sorted(failed) == ["c", "d"]
    assert failed["c"].startswith("no label")
    assert "not a PIL image" in failed["d"]
    store = camkit.open_store(tmp_path / "store")
    assert [(k, store[k].target, store[k].label) for k in store] == [("a", 4, 4), ("b", 2, 2), ("e", 0, 0)]
    reference = camkit.explain(tiny_model(), torch.stack([images[1]]), METHODS, class_idx=2)
    torch.testing.assert_close(store["b"].resized()["gradcam"], reference.maps["gradcam"][0, 0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"label 7 .* out of range: the model has 5 classes"):
        _run([(images[0], 7)], tmp_path / "other", target="label")


def test_label_target_needs_class_folders(tmp_path: Path) -> None:
    make_images(tmp_path / "flat", 3, classes=())
    with pytest.raises(ValueError, match="needs every image in a class sub-folder"):
        _run(tmp_path / "flat", tmp_path / "store", target="label")


def test_an_open_store_is_a_snapshot_and_reruns_only_add_new_images(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    _run(folder, out)
    before = camkit.open_store(out)
    make_images(tmp_path / "more", 14)
    (folder / "dog" / "013.png").write_bytes((tmp_path / "more" / "dog" / "013.png").read_bytes())
    report = _run(folder, out)
    assert (report.computed, report.skipped) == (1, 12)
    assert len(before) == 12
    assert "dog/013.png" not in before
    after = camkit.open_store(out)
    assert len(after) == 13
    for key in before:
        torch.testing.assert_close(before[key].maps["gradcam"], after[key].maps["gradcam"], atol=0, rtol=0)


def test_leftovers_of_a_killed_writer_are_ignored_and_cleaned(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    _run(folder, out)
    part = next((out / PARTS).iterdir())
    np.save(part / "0123456789abcdef0123456789abcdef.npy", np.zeros((1, 3)))  # renamed, never committed
    (part / "feed.npy.tmp").write_bytes(b"half a shard")
    assert len(camkit.open_store(out)) == 12
    reference = tmp_path / "reference"
    _run(folder, reference)
    assert_same_store(Store(out), Store(reference))
    with PartWriter(out, 0):
        pass
    assert (
        sorted(p.suffix for p in part.iterdir() if p.suffix in (".npy", ".tmp")) == [".npy"] * 3
    )  # 12 images, batch 4


def test_two_writers_of_one_part_are_refused(folder: Path, tmp_path: Path) -> None:
    _run(folder, tmp_path / "store")
    with PartWriter(tmp_path / "store", 0), pytest.raises(ValueError, match="another camkit run is writing"):
        PartWriter(tmp_path / "store", 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"methods": []}, "methods is empty"),
        ({"methods": ["nope"]}, "nope"),
        ({"batch_size": 0}, r"batch_size must be None \(device default\) or a positive int"),
        ({"workers": -1}, "workers must be None"),
        ({"dtype": "float64"}, "dtype must be 'float16' or 'float32'"),
        ({"target": "top:2"}, "target 'top:2' is not one of"),
    ],
)
def test_bad_arguments_name_the_fix(folder: Path, tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run(folder, tmp_path / "store", **options)
    assert not (tmp_path / "store").exists()


def test_missing_source_and_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _run(tmp_path / "nowhere", tmp_path / "store")
    with pytest.raises(FileNotFoundError, match="no camkit store"):
        camkit.open_store(tmp_path)


def test_channels_last_batches_give_the_same_store(folder: Path, tmp_path: Path) -> None:
    _run(folder, tmp_path / "plain", channels_last=False)
    _run(folder, tmp_path / "nhwc", channels_last=True)
    assert_same_store(Store(tmp_path / "plain"), Store(tmp_path / "nhwc"), atol=1e-5)


def test_export_of_a_dataset_store_draws_the_maps_alone(tmp_path: Path) -> None:
    from camkit.runner import export
    from camkit.viz import colorize

    generator = torch.Generator().manual_seed(5)
    _run([torch.rand(3, 32, 32, generator=generator) for _ in range(2)], tmp_path / "store", keys=["x/a", "b"])
    assert export(tmp_path / "store", tmp_path / "png", ["layercam"], progress=False) == 2
    store = camkit.open_store(tmp_path / "store")
    record = store["x/a"]
    drawn = Image.open(tmp_path / "png" / "x" / f"a_layercam_{record.target}.png")
    expected = colorize(record.resized()["layercam"], "jet")
    assert drawn.size == (32, 32)
    assert np.array_equal(np.asarray(drawn), np.asarray(expected))
    assert (tmp_path / "png" / f"b_layercam_{store['b'].target}.png").is_file()
