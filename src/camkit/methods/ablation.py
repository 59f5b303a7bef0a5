"""Methods that replace the target layer's output and re-run the rest of the network.

Both use :meth:`camkit.engine.ModelProbe.replaced_scores`, which runs the layers before the target
layer once per sample and only the rest of the network on the modified activations (with a
checked fallback to full forwards), ``batch_size`` modified activations per forward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camkit.registry import MethodContext, Option, Probe, register

__all__ = ["ablationcam", "reciprocam"]


def _probe(ctx: MethodContext, name: str) -> Probe:
    if ctx.probe is None:
        raise ValueError(f"{name} re-runs the model: run the forward after creating the extractor")
    return ctx.probe


@register(
    "ablationcam",
    class_name="AblationCAM",
    peer_names=("AblationCAM",),
    options={"ablation_value": Option(0.0, (float, int), "the value an ablated channel is set to")},
    cost="C",
    notes=(
        "Engine switches that matter here: ``batch_size`` (ablated activations per forward), ``reforward`` "
        '(``"auto"``: re-run only the layers after the target layer, checked, with a fallback to full forwards) '
        "and ``progress``."
    ),
    needs_gradients=False,
    needs_input=True,
    family="perturbation",
    summary="Ablation-CAM: weight = relative score drop when the channel is set to zero.",
    paper="Desai & Ramaswamy, Ablation-CAM, WACV 2020",
)
def ablationcam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Ablation-CAM weights :math:`w_k = (Y - Y_{A_k = v}) / Y`.

    :math:`Y_{A_k=v}` is the target score with channel ``k`` of the target layer set to the
    ``ablation_value`` option (default 0, the paper's choice).
    """
    probe = _probe(ctx, "ablationcam")
    value = float(ctx.options["ablation_value"])
    n, c = a.shape[:2]
    # rows 0..N*C-1 ablate channel k of sample n; the last N rows are the unablated activations
    # (the base score), so they travel in the same forwards as the ablations.
    rows = torch.cat([torch.arange(n, device=a.device).repeat_interleave(c), torch.arange(n, device=a.device)])
    channels = torch.cat([torch.arange(c, device=a.device).repeat(n), torch.full((n,), -1, device=a.device)])
    scores = torch.empty(n * (c + 1), dtype=a.dtype, device=a.device)
    row_bytes = a.shape[1:].numel() * a.element_size()  # also for an empty batch
    for _, part in probe.chunks(n * (c + 1), label="ablated channels", row_bytes=row_bytes):
        acts = a[rows[part]].clone()
        ablate = (channels[part] >= 0).nonzero().squeeze(1)
        acts[ablate, channels[part][ablate]] = value
        scores[part] = probe.replaced_scores(acts, rows[part]).to(a.dtype)
    base = scores[n * c :].unsqueeze(1)
    return (base - scores[: n * c].view(n, c)) / base


def _position_masks(spatial: tuple[int, ...], kernel: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """One mask per position, ``(|S|, *S)``.

    The mask is 1 at the position; for ``"gaussian"`` also 1/2 at direct neighbours and 1/4 at
    diagonal ones (a 3×3 binomial kernel scaled to peak 1).
    """
    count = 1
    for s in spatial:
        count *= s
    masks = torch.eye(count, dtype=dtype, device=device).view(count, 1, *spatial)
    if kernel == "point":
        return masks.view(count, *spatial)
    if kernel != "gaussian":
        raise ValueError(f"kernel must be 'gaussian' or 'point', got {kernel!r}")
    taps = torch.tensor([0.5, 1.0, 0.5], dtype=dtype, device=device)
    for dim in range(len(spatial)):
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + dim] = 3
        weight = taps.view(shape)
        padding = [0] * len(spatial)
        padding[dim] = 1
        conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[len(spatial) - 1]
        masks = conv(masks, weight, padding=padding)
    return masks.view(count, *spatial)


@register(
    "reciprocam",
    class_name="ReciproCAM",
    options={"kernel": Option("gaussian", (str,), "the mask around each position, 'gaussian' or 'point'")},
    cost="P",
    needs_gradients=False,
    needs_input=True,
    relu=False,
    output="map",
    family="perturbation",
    summary="Recipro-CAM: score of the network fed the feature map masked around each position.",
    paper="Byun & Lee, Recipro-CAM: Fast gradient-free visual explanations for CNNs, arXiv:2209.14074, 2022",
)
def reciprocam(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Recipro-CAM map :math:`L(i, j) = Y(A \odot M_{ij})`.

    :math:`M_{ij}` keeps the activation around position ``(i, j)`` (option ``kernel``:
    ``"gaussian"``, the default, or ``"point"``) and zeroes the rest; :math:`Y` is the target
    (the paper uses the softmax probability: pass ``targets=ClassProbabilityTarget(c)``).
    """
    probe = _probe(ctx, "reciprocam")
    n = a.shape[0]
    spatial = tuple(a.shape[2:])
    masks = _position_masks(spatial, str(ctx.options["kernel"]), a.dtype, a.device)
    positions = masks.shape[0]
    rows = torch.arange(n, device=a.device).repeat_interleave(positions)
    which = torch.arange(positions, device=a.device).repeat(n)
    out = torch.empty(n * positions, dtype=a.dtype, device=a.device)
    row_bytes = a.shape[1:].numel() * a.element_size()  # also for an empty batch
    for _, part in probe.chunks(n * positions, label="masked positions", row_bytes=row_bytes):
        acts = a[rows[part]] * masks[which[part]].unsqueeze(1)
        out[part] = probe.replaced_scores(acts, rows[part]).to(a.dtype)
    return out.view(n, *spatial)
