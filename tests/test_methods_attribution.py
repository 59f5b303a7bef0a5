"""TransformerAttribution (Chefer et al.) against hand computations and on timm, torchvision and Hugging Face ViTs.

The reference runs each 2-block toy transformer by hand from its weights
(:func:`test_vit_attention.reference_forward`), differentiates the summed class logits with
respect to every block's attention probabilities, and propagates
``R <- R + mean_h((grad * A)^+) @ R`` from the identity, sample by sample, in float64.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from camkit.engine import attention_blocks
from camkit.methods import TransformerAttribution
from camkit.methods.attribution import transformer_attribution
from camkit.targets import ClassProbabilityTarget
from conftest import all_hooks
from test_vit_attention import TOLERANCE, TOYS, Toy, reference_forward
from test_vit_models import attention_flags, deit, hf_vit, swin, tv_vit

DTYPE = torch.float64
CLASSES = [1, 3]


def _input() -> Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=DTYPE)


def reference_attribution(
    toy: Toy, x: Tensor, classes: list[int], blocks: list[int], probability: bool = False
) -> Tensor:
    logits, _, attentions = reference_forward(toy, x)
    scores = torch.softmax(logits, dim=1) if probability else logits
    score = sum(scores[s, c] for s, c in enumerate(classes))
    grads = torch.autograd.grad(score, [attentions[i] for i in blocks])
    prefix = len(toy.prefix)
    maps = []
    for s in range(x.shape[0]):
        tokens = attentions[0].shape[-1]
        r = torch.eye(tokens, dtype=DTYPE)
        for i, grad in zip(blocks, grads, strict=True):
            heads = attentions[i][s].detach()
            weighted = torch.zeros(tokens, tokens, dtype=DTYPE)
            for h in range(heads.shape[0]):
                weighted += (grad[s, h] * heads[h]).clamp(min=0)
            r = r + (weighted / heads.shape[0]) @ r
        maps.append(r[0, prefix:].reshape(*toy.grid))
    return torch.stack(maps)


def _minmax(cam: Tensor) -> Tensor:
    flat = cam.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low)).view_as(cam)


# --------------------------------------------------------------------------------------------------
# Hand computations
# --------------------------------------------------------------------------------------------------
def test_two_blocks_by_hand() -> None:
    """Two tokens, one head. Block 1: A = 1/2 everywhere, grad 1 -> R1 = I + A = [[1.5, .5], [.5, 1.5]].

    Block 2: A = I, grad [[2, -1], [1, 1]] -> (grad * A)^+ = diag(2, 1), R2 = R1 + diag(2, 1) R1 =
    [[4.5, 1.5], [1, 3]]; the class token's row is [4.5, 1.5].
    """
    a1, g1 = torch.full((1, 1, 2, 2), 0.5, dtype=DTYPE), torch.ones(1, 1, 2, 2, dtype=DTYPE)
    a2 = torch.eye(2, dtype=DTYPE).view(1, 1, 2, 2)
    g2 = torch.tensor([[[[2.0, -1.0], [1.0, 1.0]]]], dtype=DTYPE)
    got = transformer_attribution([a1, a2], [g1, g2], prefix=1)
    torch.testing.assert_close(got, torch.tensor([[4.5, 1.5]], dtype=DTYPE))
    pooled = transformer_attribution([a1, a2], [g1, g2], prefix=1, pool_patches=True)
    torch.testing.assert_close(pooled, torch.tensor([[1.0, 3.0]], dtype=DTYPE))  # the patch token's row
    skipped = transformer_attribution([a1, a2], [None, g2], prefix=1)  # a block the score does not depend on
    torch.testing.assert_close(skipped, torch.tensor([[3.0, 0.0]], dtype=DTYPE))


def test_heads_are_averaged_after_the_positive_part() -> None:
    probs = torch.ones(1, 2, 2, 2, dtype=DTYPE)
    grads = torch.stack([torch.ones(2, 2), -torch.ones(2, 2)]).to(DTYPE).unsqueeze(0)  # head 2 is all negative
    # mean_h((g A)^+) = 1/2 everywhere, not (1 - 1)/2 = 0
    got = transformer_attribution([probs], [grads], prefix=1)
    torch.testing.assert_close(got, torch.tensor([[1.5, 0.5]], dtype=DTYPE))


@pytest.mark.parametrize("kind", TOYS)
@pytest.mark.parametrize("blocks", [[0, 1], [1]])
def test_matches_the_float64_reference(kind: str, blocks: list[int]) -> None:
    toy, x = TOYS[kind](), _input()
    names = [name for name, _ in attention_blocks(toy.model)]
    layers = None if blocks == [0, 1] else [names[i] for i in blocks]
    with TransformerAttribution(toy.model, layers) as extractor:
        out = toy.model(x)
        raw = extractor(CLASSES, out, normalized=False, retain_graph=True)[0]
        cam = extractor(CLASSES, out)[0]
    expected = reference_attribution(toy, x, CLASSES, blocks)
    torch.testing.assert_close(raw, expected, rtol=TOLERANCE[kind], atol=TOLERANCE[kind])
    torch.testing.assert_close(cam, _minmax(expected), rtol=TOLERANCE[kind], atol=TOLERANCE[kind])


def test_targets_choose_the_differentiated_score() -> None:
    toy, x = TOYS["torchvision"](), _input()
    with TransformerAttribution(toy.model) as extractor:
        cam = extractor(targets=ClassProbabilityTarget(CLASSES), scores=toy.model(x), normalized=False)[0]
    expected = reference_attribution(toy, x, CLASSES, [0, 1], probability=True)
    torch.testing.assert_close(cam, expected, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Real (random-init) ViTs from the three libraries
# --------------------------------------------------------------------------------------------------
def _timm_vit(**kwargs: Any) -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3, num_classes=5, **kwargs
    ).eval()


MODELS = {
    "torchvision": tv_vit,
    "timm-deit": deit,
    "timm-vit": _timm_vit,
    "timm-vit-avgpool": lambda: _timm_vit(global_pool="avg", class_token=False),
    "huggingface": hf_vit,
}


@pytest.mark.parametrize("kind", MODELS)
def test_runs_on_the_libraries_vits_and_leaves_them_as_they_were(kind: str) -> None:
    model = MODELS[kind]()
    flags, hooks = attention_flags(model), all_hooks(model)
    for param in model.parameters():  # a frozen model still works: camkit differentiates its own input copy
        param.requires_grad_(False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with TransformerAttribution(model) as extractor:
        out = model(x)
        cams = extractor([0, 4], getattr(out, "logits", out))
    assert len(cams) == 1
    assert cams[0].shape == (2, 4, 4)
    assert torch.isfinite(cams[0]).all()
    assert cams[0].amax() == 1
    assert attention_flags(model) == flags
    assert all_hooks(model) == hooks
    assert all(p.grad is None for p in model.parameters())


def test_avgpool_vit_reads_the_mean_of_the_patch_rows() -> None:
    model = _timm_vit(global_pool="avg", class_token=False).double()
    x = _input()
    kept: list[Tensor] = []
    with TransformerAttribution(model) as extractor:
        out = model(x)
        attentions = extractor._capture.attention()
        grads = torch.autograd.grad(out[:, 2].sum(), attentions, retain_graph=True)
        kept = [transformer_attribution(attentions, grads, prefix=0, pool_patches=True)]
        cam = extractor(2, out, normalized=False)[0]
    torch.testing.assert_close(cam, kept[0].detach().view(2, 4, 4))


# --------------------------------------------------------------------------------------------------
# Misuse
# --------------------------------------------------------------------------------------------------
def test_scores_are_required_and_a_graph_is_needed() -> None:
    model, x = tv_vit(), torch.rand(1, 3, 32, 32)
    with TransformerAttribution(model) as extractor:
        model(x)
        with pytest.raises(ValueError, match="scores=model"):
            extractor(0)
        with pytest.raises(ValueError, match="exactly one of class_idx"):
            extractor()
        with torch.no_grad():
            scores = model(x)
        with pytest.raises(ValueError, match="attention"):
            extractor(0, scores)


def test_swin_and_empty_block_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="windows"):
        TransformerAttribution(swin())
    with pytest.raises(ValueError, match="at least one target block"):
        TransformerAttribution(tv_vit(), [])
    with pytest.raises(TypeError, match="contains no attention module"):
        TransformerAttribution(tv_vit(), ["conv_proj"])
