"""Vision-transformer test models (random weights, built offline) shared by the tests/test_vit*.py modules.

Two sets:

* ``FAMILIES``: reduced instances of the named architectures — the same classes (torchvision
  ``VisionTransformer``, timm distilled DeiT with its class + distillation tokens, timm Swin with
  channels-last stages, Hugging Face ``ViTForImageClassification``) with fewer and narrower blocks
  and small inputs, so the whole registry runs on each in seconds;
* ``NAMED``: the full-size named models (torchvision ``vit_b_16`` at 64 px, timm
  ``deit_tiny_patch16_224``, ``deit_tiny_distilled_patch16_224`` and ``swin_tiny_patch4_window7_224``
  at 64 px).

torchvision's ViT initializes its head to zero; the builders give it random weights so gradients
are not all zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import timm
import torch
import torchvision
from torch import Tensor, nn

from camkit.compat.gradcam.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform


def _random_head(model: nn.Module) -> nn.Module:
    torch.manual_seed(3)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


def tv_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    return _random_head(model)


def deit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "deit_tiny_distilled_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=16,
        depth=2,
        num_heads=2,
        num_classes=5,
    ).eval()


def swin() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=64,
        embed_dim=8,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        window_size=2,
        num_classes=5,
    ).eval()


def hf_vit(layers: int = 2) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=5,
    )
    model: nn.Module = transformers.ViTForImageClassification(config)
    return model.eval()


def _deit_grid(tokens: Tensor) -> Tensor:
    return tokens[:, 2:].reshape(tokens.shape[0], 4, 4, tokens.shape[2]).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Family:
    """A test model and what camkit should find in it."""

    name: str
    build: Callable[[], nn.Module]
    size: int  # input side in pixels
    layer: str  # the automatic target layer
    grid: tuple[int, int]  # its patch grid
    fc_layer: str  # the classification head (for CAM)
    reshape: Callable[[Tensor], Tensor]  # an explicit reshape_transform equal to the automatic layout
    embed_grid: tuple[int, int]  # grid of the patch-embedding convolution (FullGrad's default layer)

    def __str__(self) -> str:
        return self.name


FAMILIES = [
    Family(
        "torchvision-vit",
        tv_vit,
        32,
        "encoder.layers.encoder_layer_1.ln_1",
        (4, 4),
        "heads.head",
        lambda t: vit_reshape_transform(t, 4, 4),
        (4, 4),
    ),
    Family("timm-deit-distilled", deit, 32, "blocks.1.norm1", (4, 4), "head", _deit_grid, (4, 4)),
    Family("timm-swin", swin, 64, "norm", (2, 2), "head.fc", lambda t: swinT_reshape_transform(t, 2, 2), (16, 16)),
    Family(
        "hf-vit",
        hf_vit,
        32,
        "vit.layers.1.layernorm_before",
        (4, 4),
        "classifier",
        lambda t: vit_reshape_transform(t, 4, 4),
        (4, 4),
    ),
]


def named(name: str) -> tuple[nn.Module, int]:
    """A full-size named model at the input size the tests use."""
    torch.manual_seed(0)
    if name == "vit_b_16":
        return _random_head(torchvision.models.vit_b_16(image_size=64)), 64
    return timm.create_model(name, pretrained=False, img_size=64).eval(), 64


#: (model name, its automatic target layer, its grid at 64 px)
NAMED = [
    ("vit_b_16", "encoder.layers.encoder_layer_11.ln_1", (4, 4)),
    ("deit_tiny_patch16_224", "blocks.11.norm1", (4, 4)),
    ("deit_tiny_distilled_patch16_224", "blocks.11.norm1", (4, 4)),
    ("swin_tiny_patch4_window7_224", "norm", (2, 2)),
]


def attention_flags(model: nn.Module) -> list[Any]:
    """Every flag camkit may switch to read attention: timm's fused_attn, Hugging Face's implementation."""
    flags: list[Any] = [getattr(m, "fused_attn", None) for m in model.modules()]
    config = getattr(model, "config", None)
    flags.append(getattr(config, "_attn_implementation", None))
    return flags


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_family_models_classify_their_inputs(family: Family) -> None:
    model = family.build()
    out = model(torch.rand(2, 3, family.size, family.size))
    assert getattr(out, "logits", out).shape == (2, 5)
