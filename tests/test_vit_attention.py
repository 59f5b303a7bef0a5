"""LeGrad and attention rollout against independent float64 re-derivations on 2-block toy transformers.

The reference runs each toy model by hand from its weights (patch convolution, prefix tokens,
position embedding, pre-norm blocks with softmax(QK^T/sqrt(d)) attention, GELU MLP), keeps every
block's attention probabilities and output tokens, and computes:

* LeGrad (TorchCAM 0.5's semantics): per block, d(class score of the block's mean token through
  the final norm and head) / d(attention); ReLU; mean over heads and queries; patch keys; mean over
  blocks; per-sample min-max;
* rollout (Abnar & Zuidema): per sample and block, head fusion, each row's lowest patch weights
  zeroed, + identity, rows normalized, multiplied through the blocks; the class token's row.

The three toys cover the three ways camkit reads attention: torchvision (nn.MultiheadAttention,
recomputed), timm (fused_attn switched off, attn_drop hooked) and Hugging Face (eager mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camkit.engine import attention_blocks
from camkit.methods import AttentionRollout, GradCAM, LeGrad
from camkit.methods.attention import attention_rollout, head_projection
from camkit.targets import ClassProbabilityTarget
from conftest import all_hooks
from test_vit_models import attention_flags, deit, hf_vit, swin, tv_vit

DTYPE = torch.float64
CLASSES = [1, 3]


# --------------------------------------------------------------------------------------------------
# The hand-written reference
# --------------------------------------------------------------------------------------------------
@dataclass
class Block:
    ln1: nn.Module
    q: tuple[Tensor, Tensor]
    k: tuple[Tensor, Tensor]
    v: tuple[Tensor, Tensor]
    out: nn.Module
    ln2: nn.Module
    fc1: nn.Module
    fc2: nn.Module
    heads: int


@dataclass
class Toy:
    model: nn.Module
    conv: nn.Conv2d
    prefix: list[Tensor]  # (1, 1, D) class (and distillation) tokens
    pos: Tensor
    blocks: list[Block]
    final: nn.Module
    heads: list[nn.Module]  # classifier(s) on the pooled prefix token(s)
    grid: tuple[int, int]


def _ln(x: Tensor, norm: nn.Module) -> Tensor:
    return F.layer_norm(x, norm.weight.shape, norm.weight, norm.bias, norm.eps)


def _lin(x: Tensor, layer: nn.Module) -> Tensor:
    return x @ layer.weight.T + layer.bias


def tv_toy() -> Toy:
    m = tv_vit().double()
    blocks = []
    for layer in m.encoder.layers:
        att = layer.self_attention
        w, b = att.in_proj_weight.chunk(3), att.in_proj_bias.chunk(3)
        blocks.append(
            Block(
                layer.ln_1,
                (w[0], b[0]),
                (w[1], b[1]),
                (w[2], b[2]),
                att.out_proj,
                layer.ln_2,
                layer.mlp[0],
                layer.mlp[3],
                2,
            )
        )
    return Toy(m, m.conv_proj, [m.class_token], m.encoder.pos_embedding, blocks, m.encoder.ln, [m.heads.head], (4, 4))


def timm_toy() -> Toy:
    m = deit().double()
    blocks = []
    for block in m.blocks:
        w, b = block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3)
        blocks.append(
            Block(
                block.norm1, (w[0], b[0]), (w[1], b[1]), (w[2], b[2]), block.attn.proj, block.norm2,
                block.mlp.fc1, block.mlp.fc2, 2,
            )
        )  # fmt: skip
    return Toy(
        m, m.patch_embed.proj, [m.cls_token, m.dist_token], m.pos_embed, blocks, m.norm, [m.head, m.head_dist], (4, 4)
    )


def hf_toy() -> Toy:
    m = hf_vit().double()
    blocks = []
    for layer in m.vit.layers:
        att = layer.attention
        blocks.append(
            Block(
                layer.layernorm_before,
                (att.q_proj.weight, att.q_proj.bias),
                (att.k_proj.weight, att.k_proj.bias),
                (att.v_proj.weight, att.v_proj.bias),
                att.o_proj,
                layer.layernorm_after,
                layer.mlp.fc1,
                layer.mlp.fc2,
                2,
            )
        )
    emb = m.vit.embeddings
    return Toy(
        m, emb.patch_embeddings.projection, [emb.cls_token], emb.position_embeddings, blocks, m.vit.layernorm,
        [m.classifier], (4, 4),
    )  # fmt: skip


def reference_forward(toy: Toy, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Logits, every block's output tokens and attention probabilities, by hand."""
    n = x.shape[0]
    patches = F.conv2d(x, toy.conv.weight, toy.conv.bias, stride=toy.conv.stride).flatten(2).transpose(1, 2)
    tokens = torch.cat([*(p.expand(n, -1, -1) for p in toy.prefix), patches], dim=1) + toy.pos
    outputs, attentions = [], []
    for block in toy.blocks:
        h = _ln(tokens, block.ln1)
        t, d = h.shape[1], h.shape[2] // block.heads

        def split(w: tuple[Tensor, Tensor], h: Tensor = h, t: int = t, d: int = d, heads: int = block.heads) -> Tensor:
            return (h @ w[0].T + w[1]).view(n, t, heads, d).transpose(1, 2)

        q, k, v = split(block.q), split(block.k), split(block.v)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        tokens = tokens + _lin((probs @ v).transpose(1, 2).reshape(n, t, -1), block.out)
        tokens = tokens + _lin(F.gelu(_lin(_ln(tokens, block.ln2), block.fc1)), block.fc2)
        outputs.append(tokens)
        attentions.append(probs)
    pooled = _ln(tokens, toy.final)
    logits = sum(_lin(pooled[:, i], head) for i, head in enumerate(toy.heads)) / len(toy.heads)
    return logits, outputs, attentions


def _minmax(cam: Tensor) -> Tensor:
    flat = cam.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low)).view_as(cam)


def reference_legrad(toy: Toy, x: Tensor, classes: list[int], blocks: list[int]) -> Tensor:
    _, outputs, attentions = reference_forward(toy, x)
    prefix = len(toy.prefix)
    maps = []
    for i in blocks:
        feature = _ln(outputs[i].mean(dim=1), toy.final)
        logits = sum(_lin(feature, head) for head in toy.heads) / len(toy.heads)
        score = sum(logits[s, c] for s, c in enumerate(classes))
        (grad,) = torch.autograd.grad(score, attentions[i], retain_graph=True)
        relevance = grad.clamp(min=0).mean(dim=(1, 2))[:, prefix:]
        maps.append(relevance.reshape(x.shape[0], *toy.grid))
    return _minmax(torch.stack(maps).mean(dim=0))


def reference_rollout(toy: Toy, x: Tensor, fusion: str, discard: float) -> Tensor:
    with torch.no_grad():
        _, _, attentions = reference_forward(toy, x)
    prefix = len(toy.prefix)
    maps = []
    for s in range(x.shape[0]):
        total = None
        for probs in attentions:
            heads = probs[s]
            fused = {"mean": heads.mean(0), "max": heads.max(0).values, "min": heads.min(0).values}[fusion].clone()
            count = int(discard * (fused.shape[1] - prefix))
            for row in fused:
                order = sorted(range(prefix, fused.shape[1]), key=lambda j, row=row: float(row[j]))
                for j in order[:count]:
                    row[j] = 0.0
            step = fused + torch.eye(fused.shape[0], dtype=DTYPE)
            step = step / step.sum(dim=1, keepdim=True)
            total = step if total is None else step @ total
        assert total is not None
        maps.append(total[0, prefix:].reshape(*toy.grid))
    return _minmax(torch.stack(maps))


TOYS: dict[str, Callable[[], Toy]] = {"torchvision": tv_toy, "timm": timm_toy, "huggingface": hf_toy}
# Hugging Face computes its softmax in float32 even for float64 models
TOLERANCE = {"torchvision": 1e-9, "timm": 1e-9, "huggingface": 1e-5}


def _input() -> Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=DTYPE)


# --------------------------------------------------------------------------------------------------
# Reference comparisons
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", TOYS)
def test_reference_forward_is_the_model(kind: str) -> None:
    toy, x = TOYS[kind](), _input()
    logits, _, _ = reference_forward(toy, x)
    out = toy.model(x)
    torch.testing.assert_close(getattr(out, "logits", out), logits, rtol=TOLERANCE[kind], atol=TOLERANCE[kind])


@pytest.mark.parametrize("kind", TOYS)
@pytest.mark.parametrize("blocks", [[0, 1], [1]])
def test_legrad_matches_reference(kind: str, blocks: list[int]) -> None:
    toy, x = TOYS[kind](), _input()
    names = [name for name, _ in attention_blocks(toy.model)]
    layers = None if blocks == [0, 1] else [names[i] for i in blocks]
    with LeGrad(toy.model, layers) as extractor:
        cam = extractor(CLASSES, toy.model(x))[0]
    expected = reference_legrad(toy, x, CLASSES, blocks)
    torch.testing.assert_close(cam, expected, rtol=TOLERANCE[kind], atol=TOLERANCE[kind])


@pytest.mark.parametrize("kind", TOYS)
@pytest.mark.parametrize(("fusion", "discard"), [("mean", 0.0), ("max", 0.5), ("min", 0.25)])
def test_rollout_matches_reference(kind: str, fusion: str, discard: float) -> None:
    toy, x = TOYS[kind](), _input()
    with AttentionRollout(toy.model, head_fusion=fusion, discard_ratio=discard) as extractor:
        with torch.inference_mode():
            toy.model(x)
        cam = extractor()[0]
    expected = reference_rollout(toy, x, fusion, discard)
    torch.testing.assert_close(cam, expected, rtol=TOLERANCE[kind], atol=TOLERANCE[kind])


def test_rollout_mean_fusion_is_half_attention_half_identity() -> None:
    """With mean fusion and no discard, each step is the paper's 0.5 A + 0.5 I."""
    toy, x = tv_toy(), _input()
    with torch.no_grad():
        _, _, attentions = reference_forward(toy, x)
    eye = torch.eye(attentions[0].shape[-1], dtype=DTYPE)
    paper = [0.5 * a.mean(dim=1) + 0.5 * eye for a in attentions]
    rollout = (paper[1] @ paper[0])[:, 0, 1:].reshape(2, 4, 4)
    with AttentionRollout(toy.model) as extractor:
        toy.model(x)
        torch.testing.assert_close(extractor(normalized=False)[0], rollout, rtol=1e-12, atol=1e-12)


def test_legrad_with_a_target_object_and_a_frozen_model() -> None:
    """Targets are called on the block scores; a frozen model still gets gradients (the input is a leaf)."""
    toy, x = timm_toy(), _input()
    for p in toy.model.parameters():
        p.requires_grad_(False)
    with LeGrad(toy.model) as extractor:
        probability = extractor(scores=toy.model(x), targets=ClassProbabilityTarget(CLASSES))[0]
        plain = LeGrad(toy.model)
        try:
            toy.model(x)
            logit = plain(CLASSES)[0]
        finally:
            plain.remove_hooks()
    assert probability.shape == logit.shape == (2, 4, 4)
    assert all(not p.requires_grad and p.grad is None for p in toy.model.parameters())


@pytest.mark.parametrize("kind", TOYS)
def test_capture_keeps_the_model_output(kind: str) -> None:
    """torch's attention is recomputed beside the original output: bit-identical. timm and Hugging Face
    run their own unfused/eager path meanwhile: the same function, up to rounding."""
    toy, x = TOYS[kind](), _input()
    plain = toy.model(x)
    with LeGrad(toy.model) as extractor:
        captured = toy.model(x)
        extractor(CLASSES)
    plain, captured = getattr(plain, "logits", plain), getattr(captured, "logits", captured)
    if kind == "torchvision":
        assert torch.equal(captured, plain)
    torch.testing.assert_close(captured, plain, rtol=TOLERANCE[kind], atol=TOLERANCE[kind])


# --------------------------------------------------------------------------------------------------
# Lifecycle and errors
# --------------------------------------------------------------------------------------------------
def _state(model: nn.Module) -> tuple[list[bool], list[bool], list[object]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()], attention_flags(model)


@pytest.mark.parametrize("kind", TOYS)
@pytest.mark.parametrize("method", [LeGrad, AttentionRollout])
def test_attention_capture_is_undone(kind: str, method: type) -> None:
    model = TOYS[kind]().model.train()
    next(model.parameters()).requires_grad_(False)
    before = _state(model)
    x = _input()
    with method(model) as extractor:
        assert attention_flags(model) != before[2] or kind == "torchvision"  # timm/HF switched to readable paths
        extractor(CLASSES, model(x))
    assert _state(model) == before
    assert all_hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises((RuntimeError, ValueError)), method(model):
        model(torch.rand(1, 4, 32, 32, dtype=DTYPE))  # wrong channel count: the forward raises
    assert _state(model) == before
    assert all_hooks(model) == 0


def test_shapleycam_switches_fused_attention_off_and_back() -> None:
    """Second derivatives do not pass fused attention kernels; the extractor reads attention meanwhile."""
    model = deit()
    before = attention_flags(model)
    with GradCAM(model, "blocks.1.norm1") as plain:
        assert attention_flags(model) == before
        plain(0, model(torch.rand(1, 3, 32, 32)))
    from camkit.methods import ShapleyCAM

    with ShapleyCAM(model, "blocks.1.norm1") as extractor:
        assert attention_flags(model) != before
        assert extractor(0, model(torch.rand(1, 3, 32, 32)))[0].shape == (1, 4, 4)
    assert attention_flags(model) == before
    assert all_hooks(model) == 0


@pytest.mark.parametrize("method", [LeGrad, AttentionRollout])
def test_swin_is_refused_with_the_reason(method: type) -> None:
    model = swin()
    with pytest.raises(ValueError, match="local windows"):
        method(model)
    assert all_hooks(model) == 0


def test_unknown_head_and_no_attention_name_the_fix() -> None:
    toy = tv_toy()
    wrapped = nn.Sequential(toy.model)  # the head is no longer where camkit looks
    with pytest.raises(ValueError, match="score_projection="):
        LeGrad(wrapped)
    assert all_hooks(wrapped) == 0
    with LeGrad(wrapped, score_projection=head_projection(toy.model)) as extractor:
        cam = extractor(CLASSES, wrapped(_input()))[0]
    torch.testing.assert_close(cam, reference_legrad(toy, _input(), CLASSES, [0, 1]), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="no attention module"):
        AttentionRollout(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(ValueError, match="contains 2 attention modules"):
        LeGrad(toy.model, "encoder")


def test_legrad_without_gradients_names_the_fix() -> None:
    """The forward itself is refused (as TorchCAM's LeGrad does): a ValueError and a RuntimeError."""
    toy = tv_toy()
    with LeGrad(toy.model):
        for mode in (torch.no_grad, torch.inference_mode):
            with pytest.raises(ValueError, match="gradients enabled"), mode():
                toy.model(_input())
            with pytest.raises(RuntimeError, match="gradient tracking"), mode():
                toy.model(_input())


def test_legrad_refuses_forwards_it_cannot_explain() -> None:
    """Each refusal is raised by the forward and names the fix; the model is usable afterwards."""
    toy = tv_toy()
    block = toy.model.encoder.layers[0]
    attention = block.self_attention
    attention.dropout = 0.1
    toy.model.train()
    with LeGrad(toy.model, [block]), pytest.raises(ValueError, match=r"attention dropout .*model\.eval\(\)"):
        toy.model(_input())
    toy.model.eval()
    attention.dropout = 0.0
    with (
        LeGrad(toy.model, [block], score_projection=lambda tokens: tokens.mean()),
        pytest.raises(ValueError, match=r"class logits \(N, num_classes\).* got \(\)"),
    ):
        toy.model(_input())
    with LeGrad(toy.model, [block], score_projection=lambda tokens: toy.model.heads(tokens[:, 0].detach())) as ex:
        scores = toy.model(_input())
        with pytest.raises(RuntimeError, match="not connected"):
            ex(CLASSES, scores)
    forward = block.forward
    block.forward = lambda x: forward(x).mean(dim=1)  # type: ignore[method-assign]
    with LeGrad(toy.model, [block]), pytest.raises(ValueError, match="must return tokens"):
        toy.model(_input()[:, :, :, :])
    del block.forward
    with LeGrad(toy.model, [block]) as ex:  # the same model, fixed: maps again
        scores = toy.model(_input())
        assert ex(CLASSES, scores)[0].shape[0] == len(CLASSES)


def test_rollout_options_are_checked() -> None:
    model = tv_vit()
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout(model, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        AttentionRollout(model, discard_ratio=1.0)
    assert all_hooks(model) == 0


def test_rollout_of_a_patch_pooling_model_averages_the_patch_rows() -> None:
    probs = torch.softmax(torch.randn(2, 3, 6, 6, dtype=DTYPE), dim=-1)
    rollout = attention_rollout([probs], prefix=2, pool_patches=True)
    step = probs.mean(dim=1) + torch.eye(6, dtype=DTYPE)
    step = step / step.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(rollout, step[:, 2:].mean(dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attention_rollout([probs], prefix=2), step[:, 0], rtol=1e-12, atol=1e-12)
