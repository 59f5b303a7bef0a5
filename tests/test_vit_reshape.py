"""camkit.reshape: layouts inferred from shapes and models, writing grids back, reading attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camkit.compat.gradcam.utils.reshape_transforms import vit_reshape_transform
from camkit.methods import GradCAM
from camkit.reshape import (
    TokenLayout,
    TransformerInfo,
    attention_kind,
    grid_index,
    infer_layout,
    multihead_self_attention,
    scatter_grid,
    transformer_info,
)
from test_vit_models import deit, hf_vit, swin, tv_vit

PATCH16 = TransformerInfo(patch_size=(16, 16))
SWIN = TransformerInfo(patch_size=(4, 4), channels_last=True, pools_patches=True)


@pytest.mark.parametrize(
    ("shape", "size", "info", "expected"),
    [
        ((2, 197, 768), (224, 224), PATCH16, TokenLayout("tokens", 14, 14, 1)),
        ((2, 198, 192), (224, 224), None, TokenLayout("tokens", 14, 14, 2)),  # DeiT without a patch size
        ((1, 141, 64), (224, 160), None, TokenLayout("tokens", 14, 10, 1)),  # non-square input
        ((1, 201, 64), (224, 224), PATCH16, TokenLayout("tokens", 14, 14, 5)),  # class + 4 register tokens
        ((1, 26, 64), (70, 70), PATCH16, TokenLayout("tokens", 5, 5, 1)),  # padded patches (rounded up)
        ((1, 196, 64), (224, 224), None, TokenLayout("tokens", 14, 14, 0)),
        ((1, 7, 7, 768), (224, 224), SWIN, TokenLayout("channels_last", 7, 7)),
        ((1, 768, 7, 7), (224, 224), SWIN, None),  # channels first (torchvision Swin's permute)
        ((1, 512, 7, 7), (224, 224), None, None),  # a CNN
        ((1, 3, 8), (32, 48), None, None),  # 3 tokens: no 2:3 grid for any prefix
        ((1, 8, 100), (100,), None, None),  # a 1-D signal's (N, C, L)
    ],
)
def test_infer_layout(
    shape: tuple[int, ...], size: tuple[int, ...], info: TransformerInfo | None, expected: TokenLayout | None
) -> None:
    assert infer_layout(shape, size, info) == expected


def test_convolution_outputs_stay_channels_first_in_a_channels_last_model() -> None:
    conv = nn.Conv2d(3, 8, 4, stride=4)
    assert infer_layout((1, 8, 8, 8), (32, 32), SWIN, conv) is None
    assert infer_layout((1, 8, 8, 8), (32, 32), SWIN, nn.LayerNorm(8)) == TokenLayout("channels_last", 8, 8)


@pytest.mark.parametrize(
    ("build", "patch", "prefix", "channels_last", "pools"),
    [(tv_vit, (8, 8), 1, False, False), (deit, (8, 8), 2, False, False), (swin, (4, 4), None, True, True)],
)
def test_transformer_info(
    build: object, patch: tuple[int, int], prefix: int | None, channels_last: bool, pools: bool
) -> None:
    info = transformer_info(build())  # type: ignore[operator]
    assert info is not None
    assert (info.patch_size, info.prefix_tokens, info.channels_last, info.pools_patches) == (
        patch,
        prefix,
        channels_last,
        pools,
    )


def test_transformer_info_of_huggingface_and_cnns() -> None:
    info = transformer_info(hf_vit())
    assert info is not None
    assert (info.patch_size, info.image_size) == ((8, 8), (32, 32))
    assert transformer_info(nn.Sequential(nn.Conv2d(3, 4, 3))) is None


@pytest.mark.parametrize(
    "transform",
    [TokenLayout("tokens", 2, 3, prefix=2), lambda t: vit_reshape_transform(t[:, 1:], 2, 3)],
    ids=["auto", "user"],
)
def test_grids_are_written_back_into_the_layer_layout(transform: object) -> None:
    base = torch.randn(4, 8, 5, dtype=torch.float64)
    index = grid_index(transform, base[:1])  # type: ignore[arg-type]
    grid = transform(base)  # type: ignore[operator]
    assert grid.shape == (4, 5, 2, 3)
    assert torch.equal(scatter_grid(grid, base, index), base)  # unchanged grid: unchanged layer output
    back = scatter_grid(torch.zeros_like(grid), base, index)
    assert torch.equal(back[:, :2], base[:, :2])  # prefix tokens keep their values
    assert not back[:, 2:].any()


def test_a_computing_transform_cannot_be_written_back() -> None:
    with pytest.raises(ValueError, match="leave reshape_transform=None"):
        grid_index(lambda t: TokenLayout("tokens", 2, 2, 1)(t) * 2, torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="leave reshape_transform=None"):
        grid_index(lambda t: TokenLayout("tokens", 2, 2, 1)(t).repeat(1, 2, 1, 1), torch.zeros(1, 5, 3))


def test_token_layout_checks_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        TokenLayout("tokens", 2, 2, 1)(torch.zeros(1, 6, 3))
    with pytest.raises(ValueError, match="expected"):
        TokenLayout("channels_last", 2, 2)(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="kind"):
        TokenLayout("nchw", 2, 2)


def test_multihead_self_attention_recomputes_the_module() -> None:
    mha = nn.MultiheadAttention(8, 2, batch_first=False).double()
    x = torch.randn(5, 3, 8, dtype=torch.float64)  # (T, N, E)
    found = multihead_self_attention(mha, (x, x, x), {"need_weights": False})
    assert found is not None
    probs, out = found
    expected, weights = mha(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(probs, weights, rtol=1e-12, atol=1e-12)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    assert multihead_self_attention(mha, (x, x, x), {"attn_mask": mask}) is None
    assert multihead_self_attention(mha, (x, x.clone(), x), {}) is None  # cross-attention
    assert attention_kind(mha) == "torch"
    assert attention_kind(nn.Linear(2, 2)) is None


class _AnySizeTokens(nn.Module):
    """Patches of 8 px as tokens after one class token, for inputs of any size (no patch size declared)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 8, stride=8)
        self.block = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1)
        return self.head(self.block(tokens).mean(dim=1))


def test_the_layout_follows_the_input_size_from_call_to_call() -> None:
    torch.manual_seed(0)
    model = _AnySizeTokens().eval()
    with GradCAM(model, "block") as extractor:
        for size, grid in [((32, 32), (4, 4)), ((32, 64), (4, 8)), ((32, 32), (4, 4)), ((64, 32), (8, 4))]:
            x = torch.rand(2, 3, *size)
            cam = extractor(1, model(x), normalized=False)[0]
            assert cam.shape == (2, *grid)
            explicit = GradCAM(model, "block", reshape_transform=TokenLayout("tokens", *grid, prefix=1))
            with explicit:
                expected = explicit(1, model(x), normalized=False)[0]
            torch.testing.assert_close(cam, expected, rtol=0, atol=0)
