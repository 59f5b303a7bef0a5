r"""Transformer attribution: gradient-weighted attention relevance propagated through every block.

Chefer, Gur and Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers", ICCV 2021 (the rule used here, for self-attention), which simplifies
their "Transformer Interpretability Beyond Attention Visualization", CVPR 2021. Where Grad-CAM on a
vision transformer's last block sees zero gradients on the patch tokens (only the class token
reaches the head after the last attention), this method reads the attention probabilities of every
block, weights them by the gradient of the explained score, and multiplies the blocks through, as
attention rollout does (:mod:`camkit.methods.attention`, whose capture and grid layout it reuses:
no model edits, timm, torchvision and Hugging Face ViTs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit.engine import NO_GRAD_HINT, LayerSpec
from camkit.methods.attention import _AttentionExtractor, _check_blocks
from camkit.targets import Target

__all__ = ["TransformerAttribution", "transformer_attribution"]


def transformer_attribution(
    attentions: Sequence[Tensor],
    gradients: Sequence[Tensor | None],
    prefix: int = 1,
    pool_patches: bool = False,
) -> Tensor:
    r"""The relevance of every token for the explained score, propagated through the blocks.

    .. math::
        R^{0} = I, \qquad
        \bar P^{l} = \frac1H\sum_h \mathrm{ReLU}\big(\nabla P^{l}_h \odot P^{l}_h\big), \qquad
        R^{l} = R^{l-1} + \bar P^{l} R^{l-1}

    for the blocks :math:`l = 1..L` in forward order, where :math:`P^l_h` are the attention
    probabilities of head :math:`h` and :math:`\nabla P^l_h` the gradient of the explained score
    with respect to them. The result is the class token's row of :math:`R^L` (the mean of the patch
    tokens' rows for a model that pools them, ``pool_patches`` or no prefix token).

    Args:
        attentions: per block, in forward order, ``(N, heads, T, T)`` probabilities.
        gradients: their gradients (``None``: the score does not depend on that block's attention).
        prefix: number of prefix tokens (class, distillation, register).
        pool_patches: the head averages the patch tokens instead of reading the class token.

    Returns:
        ``(N, T)`` relevance of every token (prefix tokens included).

    Raises:
        ValueError: without attention, or with a gradient of another shape.

    Example:
        >>> probs = torch.full((1, 1, 2, 2), 0.5)
        >>> transformer_attribution([probs], [torch.ones(1, 1, 2, 2)], prefix=1)
        tensor([[1.5000, 0.5000]])
    """
    if not attentions or len(attentions) != len(gradients):
        raise ValueError("transformer_attribution needs the attention of at least one block and one gradient each")
    first = attentions[0]
    dtype = torch.float32 if first.dtype in (torch.float16, torch.bfloat16) else first.dtype
    tokens = first.shape[-1]
    relevance = torch.eye(tokens, dtype=dtype, device=first.device).expand(first.shape[0], tokens, tokens)
    for probs, grad in zip(attentions, gradients, strict=True):
        if grad is None:
            continue
        if grad.shape != probs.shape:
            raise ValueError(f"gradient of shape {tuple(grad.shape)} for attention of shape {tuple(probs.shape)}")
        weighted = (grad.to(dtype) * probs.to(dtype)).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance[:, prefix:].mean(dim=1) if pool_patches or prefix == 0 else relevance[:, 0]


class TransformerAttribution(_AttentionExtractor):
    r"""Transformer attribution (Chefer et al.): gradient-weighted attention relevance through every block.

    .. math::
        R^{0} = I, \qquad R^{l} = R^{l-1} + \mathbb{E}_h\big[(\nabla P^{l}_h \odot P^{l}_h)^+\big]\, R^{l-1},
        \qquad L = R^{L}_{0,\text{patches}}

    :math:`P^l_h` are block ``l``'s attention probabilities (head ``h``), :math:`\nabla P^l_h` the
    gradient of the explained score (the model output through ``class_idx`` or ``targets``) with
    respect to them, and the map is the class token's row of :math:`R^L` on the patch tokens, as a
    grid (for a model that averages its patch tokens, e.g. timm ``global_pool="avg"``: the mean of
    the patch tokens' rows). A distilled DeiT's distillation token is not read (the class token's
    row, like attention rollout). The forward must run with gradients enabled; camkit hands the
    model a copy of its input that requires grad, so frozen models work. Chefer, Gur and Wolf,
    "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
    Transformers", ICCV 2021 (arXiv:2103.15679); "Transformer Interpretability Beyond Attention
    Visualization", CVPR 2021 (arXiv:2012.09838).

    Args:
        model: a vision transformer (see :func:`camkit.engine.attention_blocks`): timm
            ``VisionTransformer``/DeiT, torchvision ``VisionTransformer`` or a Hugging Face ViT.
        target_layer: the blocks, in forward order (modules or names); ``None``: every block (the paper).
        enable_hooks: start with the hooks recording.

    Raises:
        ValueError: for a model without supported global attention (Swin's windowed attention).
        TypeError: for a target block without an attention module.

    Example:
        >>> import torch
        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=16).eval()
        >>> with TransformerAttribution(vit) as extractor:
        ...     scores = vit(torch.rand(2, 3, 32, 32))
        ...     cams = extractor(class_idx=[1, 2], scores=scores)
        >>> cams[0].shape
        torch.Size([2, 4, 4])
    """

    uses_gradients = True

    def __init__(self, model: nn.Module, target_layer: LayerSpec = None, *, enable_hooks: bool = True) -> None:
        if isinstance(target_layer, (list, tuple)) and not target_layer:
            raise ValueError(
                "TransformerAttribution needs at least one target block, got an empty list: pass transformer "
                "blocks (modules or names), or target_layer=None for all of them"
            )
        _check_blocks(model, target_layer)
        super().__init__(model, target_layer, enable_hooks=enable_hooks)

    def __call__(
        self,
        class_idx: int | Sequence[int] | None = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Target | None = None,
    ) -> list[Tensor]:
        """The relevance map of the last forward.

        Args:
            class_idx: class to explain: one int for the batch, or one per sample.
            scores: the model output of that forward (required: the score is differentiated).
            normalized: min-max normalize the map to ``[0, 1]``.
            retain_graph: keep the autograd graph for another call on the same forward.
            targets: a :mod:`camkit.targets` object instead of ``class_idx``.

        Returns:
            ``[map]`` with the map ``(N, h, w)`` on the patch grid.

        Raises:
            ValueError: without ``scores``, without a graph (forward under ``no_grad``), or on a misuse.
        """
        target = self._target(class_idx, targets)
        if scores is None:
            raise ValueError(
                "TransformerAttribution differentiates the model output: call extractor(class_idx, scores=model(x))"
            )
        attentions = self._capture.attention()
        score = target(scores).sum()
        if not score.requires_grad or not all(p.requires_grad for p in attentions):
            raise ValueError(
                "TransformerAttribution differentiates the explained score with respect to every block's "
                f"attention: {NO_GRAD_HINT}"
            )
        grads = torch.autograd.grad(score, attentions, retain_graph=retain_graph, allow_unused=True)
        if all(g is None for g in grads):
            raise ValueError(
                "the explained score does not depend on the captured attention: pass scores=model(x) from the "
                "forward run inside the extractor"
            )
        layout = self._layout(attentions[0].shape[-1])
        pools = self._info is not None and self._info.pools_patches
        with torch.no_grad():
            relevance = transformer_attribution(
                [p.detach() for p in attentions],
                [None if g is None else g.detach() for g in grads],
                layout.prefix,
                pools,
            )
        return self._grid(relevance, normalized)

    compute_cams = __call__
