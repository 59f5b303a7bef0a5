"""The class-discriminative composite check on the real pretrained EfficientNet-Lite0 (offline).

Two bundled photos of different classes, each through the model's own preprocessing (224 x 224),
are put side by side; each photo's own top-1 class is explained on the composite, and the share of
the map's mass on that photo's half must be at least 0.80 (0.5: the map does not tell the classes
apart). ``benchmarks/new_methods.py`` runs the same check for every class-specific method at the
paper's settings (README: "Which methods tell classes apart?"); here the new methods of issue 25
that pass it run at smaller settings (fewer masks, steps, scales or channels), scored as their
papers score (the softmax probability for the masking methods, the logit for the gradient ones).
Opti-CAM, occlusion and Poly-CAM are not here: Opti-CAM's and occlusion's maps fail the check at
the paper's settings on cat + espresso (the README reports the values), and Poly-CAM passes only
with a channel budget too large for a unit test (256 channels per layer: minutes per composite).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import camkit
from camkit.methods import extractor_class
from camkit.targets import ClassProbabilityTarget, ClassTarget

ROOT = Path(__file__).resolve().parents[1]
PAIRS = (("chelsea.png", "coffee.png"), ("rocket.jpg", "grace_hopper.jpg"))
# method -> (options, whether its paper scores the probability)
CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "gradcam": ({}, False),
    "integratedgradcam": ({"steps": 8}, False),
    "cameras": ({"num_scales": 2}, False),
    "groupcam": ({}, True),
    "rise": ({"num_masks": 200}, True),
}


@pytest.fixture(scope="module")
def loaded() -> Any:
    pytest.importorskip("timm")
    from camkit.models import load_default

    return load_default()


@pytest.fixture(scope="module")
def composites(loaded: Any) -> list[tuple[torch.Tensor, list[int]]]:
    found = []
    for left, right in PAIRS:
        a, b = (loaded.preprocess(Image.open(ROOT / "assets" / name).convert("RGB")) for name in (left, right))
        with torch.no_grad():
            classes = [int(loaded.model(x[None]).argmax()) for x in (a, b)]
        assert classes[0] != classes[1]
        found.append((torch.cat([a, b], dim=-1)[None].expand(2, -1, -1, -1), classes))
    return found


def own_half(maps: torch.Tensor) -> list[float]:
    """Share of map 0's mass on the left half and of map 1's on the right half."""
    width = maps.shape[-1] // 2
    return [float(maps[0, :, :width].sum() / maps[0].sum()), float(maps[1, :, width:].sum() / maps[1].sum())]


@pytest.mark.parametrize("method", sorted(CASES))
def test_each_class_map_sits_on_its_own_photo(method: str, loaded: Any, composites: list[Any]) -> None:
    options, probability = CASES[method]
    if "generator" in camkit.get_method(method).options:
        options = {**options, "generator": torch.Generator().manual_seed(0)}
    spec = camkit.get_method(method)
    layer = None if spec.black_box or method == "polycam" else loaded.target_layer
    for x, classes in composites:
        target = ClassProbabilityTarget(classes) if probability else ClassTarget(classes)
        with extractor_class(method)(loaded.model, target_layer=layer, batch_size=64, **options) as extractor:
            maps = extractor(targets=target, scores=loaded.model(x))[-1].detach()
        maps = F.interpolate(maps[:, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        maps = maps - maps.flatten(1).amin(1).view(-1, 1, 1)
        shares = own_half(maps)
        assert min(shares) >= 0.80, f"{method}: own-half mass {shares} for classes {classes}"
