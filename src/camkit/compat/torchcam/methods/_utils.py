"""``torchcam.methods._utils``: automatic target-layer choice over :func:`camkit.engine.resolve_layers`."""

from __future__ import annotations

from torch import nn

from camkit.engine import resolve_layers

__all__ = ["locate_candidate_layer"]


def locate_candidate_layer(mod: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224)) -> str | None:
    """Name the layer a CAM extractor would pick when given no ``target_layer``.

    camkit's automatic choice (:func:`camkit.engine.resolve_layers` with ``None``): the last layer
    whose output still has spatial dims, found by one dummy forward of ``(1, *input_shape)``.

    Args:
        mod: the model.
        input_shape: the input shape without the batch dim.

    Returns:
        The layer's dotted name, or ``None`` when no layer qualifies (TorchCAM's contract; pass
        ``target_layer`` explicitly then) or the dummy forward fails (TorchCAM lets that error
        through).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> locate_candidate_layer(net, (3, 8, 8))
        '1'
    """
    try:
        names = resolve_layers(mod, None, input_shape)
    except ValueError:  # no layer with a spatial output, or the dummy forward failed
        return None
    return names[0] if names else None
