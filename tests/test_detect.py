"""camkit.detect on a known-answer detector: per-box maps, D-RISE, model state, bad input."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

import camkit
from camkit.detect import (
    DetectionExplanation,
    Detections,
    adapter_for,
    box_scores,
    detection_methods,
    explain_detections,
    random_masks,
    require,
)
from camkit.detect._types import Candidates

SIZE = 64
BOX_A = (8, 8, 24, 24)  # red patch, label 1
BOX_B = (40, 40, 56, 56)  # green patch, label 2


class TwoPatchDetector(nn.Module):
    """Two fixed boxes: A's score depends only on the red feature in patch A, B's on the green one in B.

    torchvision's convention (a list of images in, one dict per image out). ``fail_on`` makes the
    forward with that number (1 = the first) raise, to test cleanup after an error.
    """

    num_classes = 3

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.body.weight.copy_(torch.tensor([[1.0, -1, -1], [-1, 1, -1]]).view(2, 3, 1, 1))
            self.body.bias.zero_()
        self.act = nn.ReLU()
        self.fail_on = fail_on
        self.calls = 0

    def forward(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise RuntimeError("forward failed on purpose")
        features = self.act(self.body(torch.stack(list(images))))
        a = features[:, 0, BOX_A[1] : BOX_A[3], BOX_A[0] : BOX_A[2]].mean((1, 2))
        b = features[:, 1, BOX_B[1] : BOX_B[3], BOX_B[0] : BOX_B[2]].mean((1, 2))
        boxes = torch.tensor([BOX_A, BOX_B], dtype=torch.float32)
        return [
            {
                "boxes": boxes,
                "labels": torch.tensor([1, 2]),
                "scores": torch.stack([a[i], b[i]]).mul(4).sub(1).sigmoid(),
            }
            for i in range(len(images))
        ]


def two_patches() -> torch.Tensor:
    image = torch.zeros(3, SIZE, SIZE)
    image[0, BOX_A[1] : BOX_A[3], BOX_A[0] : BOX_A[2]] = 1
    image[1, BOX_B[1] : BOX_B[3], BOX_B[0] : BOX_B[2]] = 1
    return image


def patch(box: tuple[int, int, int, int]) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def model_state(model: nn.Module) -> tuple[Any, ...]:
    flags = tuple(m.training for m in model.modules())
    grads = tuple(p.grad is None for p in model.parameters())
    hooks = tuple((len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules())
    return flags, grads, hooks, tuple(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------------ known answer


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "ablationcam"])
def test_gradient_maps_put_each_box_on_its_patch(method: str) -> None:
    result = explain_detections(TwoPatchDetector(), two_patches(), method=method, target_layer="act")
    maps = result.maps[method][0]
    assert maps.shape == (2, SIZE, SIZE)
    assert [int(label) for label in result.detections[0].labels] == [1, 2]
    assert maps[0][patch(BOX_A)].sum() / maps[0].sum() > 0.9
    assert maps[1][patch(BOX_B)].sum() / maps[1].sum() > 0.9


def test_drise_puts_each_box_on_its_patch() -> None:
    result = explain_detections(
        TwoPatchDetector(),
        two_patches(),
        method="drise",
        num_masks=600,
        cell_size=8,
        generator=torch.Generator().manual_seed(0),
    )
    maps = result.maps["drise"][0]
    assert maps.shape == (2, SIZE, SIZE)
    assert float(maps.min()) == 0
    assert float(maps.max()) == 1
    for k, box in enumerate((BOX_A, BOX_B)):
        area = int(patch(box).sum())
        top = maps[k].flatten().topk(area).indices
        precision = patch(box).flatten()[top].float().mean()
        assert precision > 0.5  # a uniform map would give 256 / 4096 = 0.06
    assert result.layers["drise"] == []


def test_drise_is_reproducible_with_a_generator() -> None:
    def run() -> torch.Tensor:
        gen = torch.Generator().manual_seed(3)
        return explain_detections(TwoPatchDetector(), two_patches(), method="drise", num_masks=64, generator=gen).maps[
            "drise"
        ][0]

    torch.testing.assert_close(run(), run())


def test_given_boxes_and_labels() -> None:
    result = explain_detections(
        TwoPatchDetector(), two_patches(), boxes=[list(BOX_B)], labels=[2], method="gradcam", target_layer="act"
    )
    found = result.detections[0]
    assert found.labels.tolist() == [2]
    assert found.scores.shape == (1,)
    assert float(found.scores[0]) > 0.9
    assert result.maps["gradcam"][0][0][patch(BOX_B)].sum() / result.maps["gradcam"][0][0].sum() > 0.9


def test_given_boxes_without_labels_take_the_best_matching_class() -> None:
    shifted = [[BOX_A[0] + 2.0, BOX_A[1] + 2.0, BOX_A[2] + 2.0, BOX_A[3] + 2.0]]
    result = explain_detections(TwoPatchDetector(), two_patches(), boxes=shifted, method="gradcam", target_layer="act")
    assert result.detections[0].labels.tolist() == [1]


def test_batch_of_images_is_one_forward_per_pass() -> None:
    model = TwoPatchDetector()
    images = torch.stack([two_patches(), two_patches().flip(-1).flip(-2)])
    result = explain_detections(model, images, method="gradcam", target_layer="act", score_threshold=0.5)
    assert model.calls == 2  # the detection pass, then one forward for every box of every image
    assert len(result.maps["gradcam"]) == 2
    assert len(result.detections[0]) == 2
    assert len(result.detections[1]) == 0
    assert result.reasons[0] is None
    assert "score_threshold=0.5" in str(result.reasons[1])
    assert result.maps["gradcam"][1].shape == (0, SIZE, SIZE)


def test_eigencam_gives_every_box_its_image_map() -> None:
    result = explain_detections(TwoPatchDetector(), two_patches(), method="eigencam", target_layer="act")
    maps = result.maps["eigencam"][0]
    assert maps.shape == (2, SIZE, SIZE)
    torch.testing.assert_close(maps[0], maps[1])


def test_box_score_sum_is_the_peer_target() -> None:
    cand = Candidates(
        torch.tensor([[0.0, 0, 4, 4], [0, 0, 2, 4]]), torch.tensor([[0.0, 0.8], [0.0, 0.9]]), torch.tensor([0.8, 0.9])
    )
    boxes, labels = torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([1])
    torch.testing.assert_close(box_scores(cand, boxes, labels, "sum"), torch.tensor([1.8]))
    torch.testing.assert_close(box_scores(cand, boxes, labels, "product"), torch.tensor([0.8]))
    torch.testing.assert_close(box_scores(cand, boxes, torch.tensor([0]), "sum"), torch.tensor([0.0]))


def test_overlay_and_repr() -> None:
    result = explain_detections(
        TwoPatchDetector(), two_patches(), method=["gradcam", "drise"], target_layer="act", num_masks=32
    )
    picture = result.overlay(0, "drise")
    assert isinstance(picture, Image.Image)
    assert picture.size == (SIZE, SIZE)
    assert result.overlay(0, box=1).size == (SIZE, SIZE)
    assert "2 box(es)" in repr(result)
    with pytest.raises(ValueError, match="was not computed"):
        result.overlay(0, "eigencam")
    with pytest.raises(ValueError, match="box 5 does not exist"):
        result.overlay(0, box=5)


def test_top_level_names_and_method_list() -> None:
    assert camkit.explain_detections is explain_detections
    assert camkit.DetectionExplanation is DetectionExplanation
    names = detection_methods()
    assert {"gradcam", "eigencam", "kpcacam", "fem", "randomcam", "drise", "ablationcam"} <= set(names)
    assert "scorecam" not in names
    assert "cam" not in names


def test_random_masks_shape_and_range() -> None:
    masks = random_masks(5, (20, 30), cell_size=7, p=0.3, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (5, 20, 30)
    assert float(masks.min()) >= 0
    assert float(masks.max()) <= 1


# ------------------------------------------------------------------------------------------------ model state


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "drise", "ablationcam"])
def test_model_state_is_unchanged_after_success(method: str) -> None:
    model = TwoPatchDetector().train()
    model.body.register_forward_hook(lambda *_: None)
    before = model_state(model)
    explain_detections(model, two_patches(), method=method, target_layer="act", num_masks=8) if method == "drise" else (
        explain_detections(model, two_patches(), method=method, target_layer="act")
    )
    assert model_state(model) == before
    assert model.training


@pytest.mark.parametrize(("method", "fail_on"), [("gradcam", 2), ("gradcam", 1), ("drise", 2), ("ablationcam", 3)])
def test_model_state_is_unchanged_after_an_error(method: str, fail_on: int) -> None:
    model = TwoPatchDetector(fail_on=fail_on).train()
    before = model_state(model)
    with pytest.raises(RuntimeError, match="on purpose"):
        explain_detections(
            model, two_patches(), method=method, target_layer="act", **({"num_masks": 8} if method == "drise" else {})
        )
    assert model_state(model) == before
    assert model.training


def test_model_state_is_unchanged_after_a_bad_layer() -> None:
    model = TwoPatchDetector().train()
    before = model_state(model)
    with pytest.raises(ValueError, match="nope"):
        explain_detections(model, two_patches(), method="gradcam", target_layer="nope")
    assert model_state(model) == before


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("box", [[-10.0, 0, 20, 20], [0.0, 0, 80, 20], [20.0, 20, 10, 30], [0.0, 0, float("nan"), 10]])
def test_box_outside_the_image(box: list[float]) -> None:
    with pytest.raises(ValueError, match=r"boxes\[0\]\[0\] = .* not a box inside image 0 \(64x64 pixels\)"):
        explain_detections(TwoPatchDetector(), two_patches(), boxes=[box], labels=[1], target_layer="act")


@pytest.mark.parametrize("label", [3, -1])
def test_label_out_of_range(label: int) -> None:
    with pytest.raises(ValueError, match=r"labels\[0\]\[0\] = .* is out of range: the model's classes are 0 … 2"):
        explain_detections(TwoPatchDetector(), two_patches(), boxes=[list(BOX_A)], labels=[label], target_layer="act")


def test_labels_and_boxes_disagree() -> None:
    with pytest.raises(ValueError, match="2 labels for 1 boxes"):
        explain_detections(TwoPatchDetector(), two_patches(), boxes=[list(BOX_A)], labels=[1, 2], target_layer="act")
    with pytest.raises(ValueError, match="labels= needs boxes="):
        explain_detections(TwoPatchDetector(), two_patches(), labels=[1], target_layer="act")
    with pytest.raises(ValueError, match=r"expected \(K, 4\)"):
        explain_detections(TwoPatchDetector(), two_patches(), boxes=[1.0, 2.0, 3.0, 4.0], target_layer="act")


def test_empty_boxes_give_an_empty_result_with_the_reason() -> None:
    result = explain_detections(
        TwoPatchDetector(), two_patches(), boxes=torch.zeros(0, 4), method=["gradcam", "drise"], target_layer="act"
    )
    assert result.maps["gradcam"][0].shape == (0, SIZE, SIZE)
    assert result.maps["drise"][0].shape == (0, SIZE, SIZE)
    assert result.reasons == ["no boxes were given for this image"]
    assert result.overlay(0).size == (SIZE, SIZE)


def test_no_detection_above_the_threshold() -> None:
    result = explain_detections(TwoPatchDetector(), torch.zeros(3, SIZE, SIZE), target_layer="act")
    assert len(result.detections[0]) == 0
    assert result.reasons[0] == "no detection scored above score_threshold=0.5 (the highest was 0.269)"
    assert "no boxes" in repr(result)


def test_unmatched_given_label_warns() -> None:
    with pytest.warns(UserWarning, match="match no prediction of their label"):
        explain_detections(TwoPatchDetector(), two_patches(), boxes=[list(BOX_A)], labels=[0], target_layer="act")


def test_bad_methods_options_and_images() -> None:
    model, image = TwoPatchDetector(), two_patches()
    with pytest.raises(ValueError, match=r"not a detection method; accepted: .*drise"):
        explain_detections(model, image, method="nope")
    with pytest.raises(ValueError, match="'scorecam' is not available for detectors yet"):
        explain_detections(model, image, method="scorecam")
    with pytest.raises(TypeError, match="did you mean 'num_masks'"):
        explain_detections(model, image, method="drise", num_mask=3)
    with pytest.raises(ValueError, match="num_masks must be a positive int"):
        explain_detections(model, image, method="drise", num_masks=0)
    with pytest.raises(ValueError, match="images is empty"):
        explain_detections(model, [], target_layer="act")
    with pytest.raises(ValueError, match=r"a detector image is \(3, H, W\)"):
        explain_detections(model, torch.rand(1, SIZE, SIZE), target_layer="act")
    with pytest.raises(ValueError, match="box_score must be one of"):
        explain_detections(model, image, box_score="max", target_layer="act")


def test_pil_and_uint8_images() -> None:
    pixels = (two_patches().permute(1, 2, 0) * 255).byte().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_pil = explain_detections(TwoPatchDetector(), Image.fromarray(pixels), target_layer="act")
        from_array = explain_detections(TwoPatchDetector(), [pixels], target_layer="act")
    torch.testing.assert_close(from_pil.maps["gradcam"][0], from_array.maps["gradcam"][0])


def test_a_model_that_is_no_detector() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1))
    with pytest.raises(TypeError, match="with a list of images, as torchvision detectors are called"):
        explain_detections(model, two_patches(), target_layer="0")
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        adapter_for(lambda x: x)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ImportError, match=r"pip install camkit\[detect\]"):
        require("ultralytics")


def test_detections_record() -> None:
    found = Detections(torch.zeros(1, 4, requires_grad=True), torch.tensor([1]), torch.ones(1, requires_grad=True))
    assert not found.detach().boxes.requires_grad
    assert len(found) == 1


def test_pointing_game_per_box() -> None:
    result = explain_detections(TwoPatchDetector(), two_patches(), method="gradcam", target_layer="act")
    hits = result.pointing_game(tolerance=0)
    assert hits.per_sample.tolist() == [1.0, 1.0]
    assert hits.mean == 1.0
    assert result.pointing_game(energy=True).mean > 0.9
    with pytest.raises(ValueError, match="was not computed"):
        result.pointing_game("drise")


def test_max_boxes_keeps_the_highest_scores() -> None:
    image = two_patches()
    image[0, BOX_A[1] : BOX_A[3], BOX_A[0] : BOX_A[2]] = 0.5  # box A scores lower than box B
    result = explain_detections(TwoPatchDetector(), image, score_threshold=0.0, max_boxes=1, target_layer="act")
    assert result.detections[0].labels.tolist() == [2]
    assert result.maps["gradcam"][0].shape == (1, SIZE, SIZE)
    with pytest.raises(ValueError, match="max_boxes must be a positive int"):
        explain_detections(TwoPatchDetector(), image, max_boxes=0, target_layer="act")


def test_ablationcam_weights_and_layer_errors() -> None:
    model, image = TwoPatchDetector(), two_patches()
    result = explain_detections(model, image, method="ablationcam", target_layer="act", batch_size=1)
    assert model.calls == 4  # detection pass, base forward, one forward per channel (batch_size=1)
    assert result.layers["ablationcam"] == ["act"]
    with pytest.raises(ValueError, match="target_layer 'nope' is not a layer"):
        explain_detections(model, image, method="ablationcam", target_layer="nope")
    with pytest.raises(ValueError, match="one target layer"):
        explain_detections(model, image, method="ablationcam", target_layer=["act", "body"])
