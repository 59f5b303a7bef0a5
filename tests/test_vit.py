"""Vision transformers: every registry method on token and channels-last layers, found automatically.

The registry matrix runs on reduced instances of the named architectures (see vit_models.py); the
full-size named models check the automatic layer choice and every method whose cost does not grow
with the channel count (the perturbation family runs one forward per channel).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import camkit
from camkit.compat import gradcam as compat
from camkit.engine import CAMExtractor, resolve_layers
from camkit.methods import FullGrad
from conftest import FAST_OPTIONS, METHODS, all_hooks, method_options
from test_vit_models import FAMILIES, NAMED, Family, attention_flags, named


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    logging.getLogger("camkit").setLevel(logging.ERROR)
    yield
    logging.getLogger("camkit").setLevel(logging.NOTSET)


_MODELS: dict[str, nn.Module] = {}


def model_of(family: Family) -> nn.Module:
    """One instance per family for the read-only tests (camkit never changes a model)."""
    if family.name not in _MODELS:
        _MODELS[family.name] = family.build()
    return _MODELS[family.name]


def options(family: Family, name: str, **extra: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {**FAST_OPTIONS, "generator": torch.Generator().manual_seed(0), **extra}
    if name == "cam":
        merged["fc_layer"] = family.fc_layer
    return method_options(name, **merged)


def run(
    model: nn.Module,
    size: int,
    name: str,
    layer: Any = None,
    batch: int = 2,
    dtype: torch.dtype = torch.float32,
    **opts: Any,
) -> list[Tensor]:
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with CAMExtractor(model, layer, (3, size, size), method=name, **opts) as extractor:
        cams = extractor(list(range(batch)), model(x))
    return cams


# --------------------------------------------------------------------------------------------------
# Every registry method, automatic layer and layout
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("name", METHODS)
def test_every_method_maps_the_patch_grid(family: Family, name: str) -> None:
    model = model_of(family)
    cams = run(model, family.size, name, **options(family, name))
    # FullGrad sums its layers' terms (and the input term) at the input size
    spec = camkit.get_method(name)
    full = (family.size, family.size)
    grid = full if spec.reduce is not None else family.grid
    assert len(cams) == 1
    if spec.output == "map":  # a map function may work at the input's resolution (RISE, occlusion, Group-CAM)
        assert tuple(cams[0].shape) in ((2, *grid), (2, *full))
    else:
        assert cams[0].shape == (2, *grid)
    assert torch.isfinite(cams[0]).all()


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_automatic_layer(family: Family) -> None:
    assert resolve_layers(model_of(family), None, (3, family.size, family.size)) == [family.layer]


@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("name", METHODS)
def test_explicit_reshape_transform_gives_the_same_maps(family: Family, name: str) -> None:
    model = model_of(family)
    auto = run(model, family.size, name, family.layer, **options(family, name))
    explicit = run(model, family.size, name, family.layer, **options(family, name, reshape_transform=family.reshape))
    torch.testing.assert_close(explicit, auto, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("name", ["ablationcam", "reciprocam"])
def test_replacement_methods_fast_path_matches_full_forwards(family: Family, name: str) -> None:
    model = model_of(family).double()
    try:
        fast = run(model, family.size, name, dtype=torch.float64, reforward="fast", **options(family, name))
        full = run(model, family.size, name, dtype=torch.float64, reforward="full", **options(family, name))
    finally:
        model.float()
    torch.testing.assert_close(fast, full, rtol=1e-9, atol=1e-12)


def test_re_forwards_keep_each_sample_s_prefix_tokens() -> None:
    """AblationCAM zeroes one grid channel; the layer after sees the sample's own class/distillation tokens."""
    family = FAMILIES[1]  # DeiT: class + distillation token
    model = model_of(family)
    x = torch.rand(2, 3, 32, 32)
    seen: list[Tensor] = []
    handle = model.get_submodule("blocks.1.attn").register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    try:
        with torch.no_grad():
            model(x)
        tokens = seen.pop()  # the input of blocks.1.attn is the output of the target layer blocks.1.norm1
        with CAMExtractor(model, family.layer, method="ablationcam", batch_size=8) as extractor:
            extractor([0, 1], model(x))
    finally:
        handle.remove()
    rows = torch.cat(seen[1:])  # seen[0]: the forward the extractor explains
    assert rows.shape[0] >= 2 * (16 + 1)  # every channel of both samples and the base rows (+ the fast-path check)
    for row in rows:
        sample = [s for s in range(2) if torch.equal(row[:2], tokens[s, :2])]
        assert len(sample) == 1
        changed = (row[2:] != tokens[sample[0], 2:]).any(dim=0).nonzero()
        assert changed.numel() <= 1  # at most one channel ablated, over the patch tokens only


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_fullgrad_class_on_transformers(family: Family) -> None:
    """FullGrad's default layers are the biased convolutions (the patch embedding); LayerNorms can be added."""
    model = model_of(family)
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    x = torch.rand(1, 3, family.size, family.size)
    for layers in (None, norms):
        with FullGrad(model, layers, (3, family.size, family.size)) as extractor:
            cam = extractor(0, model(x))[0]
        assert cam.shape == (1, family.size, family.size)
        assert torch.isfinite(cam).all()


# --------------------------------------------------------------------------------------------------
# pytorch-grad-cam front door: reshape_transform=None reads transformers automatically
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("cls", ["GradCAM", "AblationCAM", "ScoreCAM"])
def test_compat_front_door_automatic_equals_explicit(family: Family, cls: str) -> None:
    model = model_of(family)
    layer = model.get_submodule(family.layer)
    x = torch.rand(2, 3, family.size, family.size)
    method = getattr(compat, cls)
    auto = method(model=model, target_layers=None)(input_tensor=x)
    explicit = method(model=model, target_layers=[layer], reshape_transform=family.reshape)(input_tensor=x)
    assert auto.shape == (2, family.size, family.size)
    np.testing.assert_array_equal(auto, explicit)


# --------------------------------------------------------------------------------------------------
# The named full-size models
# --------------------------------------------------------------------------------------------------
CHEAP = [m for m in METHODS if camkit.get_method(m).family != "perturbation"]


@pytest.fixture(scope="module")
def named_models() -> dict[str, tuple[nn.Module, int]]:
    return {name: named(name) for name, _, _ in NAMED}


@pytest.mark.parametrize(("model_name", "layer", "grid"), NAMED, ids=[n for n, _, _ in NAMED])
def test_named_models_automatic_layer(
    named_models: dict[str, tuple[nn.Module, int]], model_name: str, layer: str, grid: tuple[int, int]
) -> None:
    model, size = named_models[model_name]
    assert resolve_layers(model, None, (3, size, size)) == [layer]


@pytest.mark.parametrize(("model_name", "layer", "grid"), NAMED, ids=[n for n, _, _ in NAMED])
@pytest.mark.parametrize("name", CHEAP)
def test_named_models_cheap_methods(
    named_models: dict[str, tuple[nn.Module, int]], model_name: str, layer: str, grid: tuple[int, int], name: str
) -> None:
    model, size = named_models[model_name]
    head = {"vit_b_16": "heads.head", "swin_tiny_patch4_window7_224": "head.fc"}.get(model_name, "head")
    opts = method_options(name, fc_layer=head) if name == "cam" else method_options(name)
    cams = run(model, size, name, layer if name == "fullgrad" else None, batch=1, **opts)
    assert cams[0].shape == (1, *((size, size) if camkit.get_method(name).reduce is not None else grid))
    assert torch.isfinite(cams[0]).all()


@pytest.mark.parametrize(
    "kwargs", [{"class_token": False}, {"class_token": False, "reg_tokens": 4}], ids=["gap", "reg4"]
)
def test_patch_pooling_vits_use_the_final_norm(kwargs: dict[str, Any]) -> None:
    """A ViT that averages its patch tokens (with or without register tokens) is read at the final norm."""
    import timm

    model = timm.create_model(
        "deit_tiny_patch16_224", img_size=32, global_pool="avg", depth=2, num_classes=5, **kwargs
    ).eval()
    assert resolve_layers(model, None, (3, 32, 32)) == ["norm"]
    cams = run(model, 32, "gradcam")
    assert cams[0].shape == (2, 2, 2)
    assert cams[0].abs().sum() > 0


def test_wrong_input_shape_names_the_model_size(named_models: dict[str, tuple[nn.Module, int]]) -> None:
    model, _ = named_models["deit_tiny_patch16_224"]
    with pytest.raises(ValueError, match=r"input_shape=\(3, 64, 64\)"):
        resolve_layers(model, None, (3, 224, 224))


# --------------------------------------------------------------------------------------------------
# Errors users hit
# --------------------------------------------------------------------------------------------------
class OddTokens(nn.Module):
    """A toy whose 'blocks' emit 3 tokens for a 32x48 input: no prefix leaves a 2:3 grid."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x.flatten(2)[:, :, :3].transpose(1, 2))
        return self.head(tokens.mean(dim=1))


def test_tokens_without_a_grid_name_the_fix() -> None:
    model = OddTokens()
    with CAMExtractor(model, "embed", method="gradcam") as extractor:
        scores = model(torch.rand(1, 3, 32, 48))
        with pytest.raises(ValueError, match=r"outputs tokens of shape \(1, 3, 8\).*reshape_transform="):
            extractor(0, scores)


def test_cam_without_fc_layer_names_the_fix() -> None:
    family = FAMILIES[0]
    with pytest.raises(ValueError, match="pass fc_layer="):
        run(model_of(family), family.size, "cam")


def test_replacement_with_a_computing_transform_names_the_fix() -> None:
    family = FAMILIES[0]
    with pytest.raises(ValueError, match="leave reshape_transform=None"):
        run(model_of(family), family.size, "ablationcam", reshape_transform=lambda t: family.reshape(t) + 0.5)


@pytest.mark.parametrize(
    ("model_name", "name"),
    [
        ("deit_tiny_patch16_224", "ablationcam"),
        ("deit_tiny_distilled_patch16_224", "ablationcam"),
        ("swin_tiny_patch4_window7_224", "ablationcam"),
        ("vit_b_16", "reciprocam"),
        ("deit_tiny_distilled_patch16_224", "reciprocam"),
        ("swin_tiny_patch4_window7_224", "reciprocam"),
    ],
)
def test_named_models_replacement_methods(
    named_models: dict[str, tuple[nn.Module, int]], model_name: str, name: str
) -> None:
    """Re-forwards run only the layers after the target (the fast path), in the layer's own layout."""
    model, size = named_models[model_name]
    grid = next(g for n, _, g in NAMED if n == model_name)
    cams = run(model, size, name, batch=1, batch_size=256, reforward="fast")
    assert cams[0].shape == (1, *grid)
    assert torch.isfinite(cams[0]).all()


# --------------------------------------------------------------------------------------------------
# Lifecycle: hooks, flags, .grad and parameters, for every method on every family
# --------------------------------------------------------------------------------------------------
def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "attention": attention_flags(model),
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _assert_same(before: dict[str, Any], model: nn.Module) -> None:
    after = _snapshot(model)
    for key in ("training", "requires_grad", "attention"):
        assert after[key] == before[key], key
    for key, value in before["state"].items():
        torch.testing.assert_close(after["state"][key], value, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    assert all_hooks(model) == 0


@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("name", METHODS)
def test_lifecycle_on_transformers(family: Family, name: str) -> None:
    model = family.build().train()  # train mode must survive camkit's eval-mode re-forwards
    model.get_submodule(family.layer).eval()  # and so must a mixed per-module flag
    embed = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    embed.weight.requires_grad_(False)  # a frozen layer before the target
    before = _snapshot(model)
    size = family.size
    with CAMExtractor(model, None, (3, size, size), method=name, **options(family, name)) as extractor:
        cams = extractor([0, 1], model(torch.rand(2, 3, size, size)))
    assert torch.isfinite(cams[0]).all()
    _assert_same(before, model)
    with (
        pytest.raises((RuntimeError, ValueError)),
        CAMExtractor(model, None, (3, size, size), method=name, **options(family, name)),
    ):
        model(torch.rand(2, 4, size, size))  # wrong channel count: the forward raises
    _assert_same(before, model)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.name != "timm-swin"], ids=str)
def test_automatic_layer_without_readable_attention(family: Family, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attention camkit cannot read (e.g. an older transformers release): the pre-attention norm by name."""
    import camkit.engine._layers

    monkeypatch.setattr(camkit.engine._layers, "attention_kind", lambda _module: None)
    assert resolve_layers(model_of(family), None, (3, family.size, family.size)) == [family.layer]
