"""Find and replace sub-modules (``pytorch_grad_cam.utils.find_layers``).

The search is depth-first in registration order, a module before its children, as
pytorch-grad-cam's helpers; empty (``None``) child slots are skipped.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)))
    >>> [type(m).__name__ for m in find_layer_types_recursive(model, [nn.Conv2d])]
    ['Conv2d', 'Conv2d']
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from torch import nn

__all__ = [
    "find_layer_predicate_recursive",
    "find_layer_types_recursive",
    "replace_all_layer_type_recursive",
    "replace_layer_recursive",
]


def replace_layer_recursive(model: nn.Module, old_layer: nn.Module, new_layer: nn.Module) -> bool:
    """Replace the first occurrence of ``old_layer`` (by identity) below ``model`` with ``new_layer``.

    Args:
        model: the module searched (modified in place).
        old_layer: the sub-module to replace.
        new_layer: its replacement.

    Returns:
        Whether ``old_layer`` was found.

    Example:
        >>> model = nn.Sequential(nn.ReLU())
        >>> replace_layer_recursive(model, model[0], nn.Identity()), type(model[0]).__name__
        (True, 'Identity')
    """
    for name, layer in model.named_children():
        if layer is old_layer:
            setattr(model, name, new_layer)
            return True
        if replace_layer_recursive(layer, old_layer, new_layer):
            return True
    return False


def replace_all_layer_type_recursive(
    model: nn.Module, old_layer_type: type[nn.Module] | tuple[type[nn.Module], ...], new_layer: nn.Module
) -> None:
    """Replace every sub-module that is an instance of ``old_layer_type`` with ``new_layer`` (in place).

    The same ``new_layer`` object is put in every place (pytorch-grad-cam's behaviour); children of
    a replaced module are not searched further.

    Args:
        model: the module searched (modified in place).
        old_layer_type: a class (or tuple of classes) for ``isinstance``.
        new_layer: the replacement.

    Example:
        >>> model = nn.Sequential(nn.ReLU(), nn.Sequential(nn.ReLU()))
        >>> replace_all_layer_type_recursive(model, nn.ReLU, nn.Identity())
        >>> type(model[0]).__name__, type(model[1][0]).__name__
        ('Identity', 'Identity')
    """
    for name, layer in list(model.named_children()):
        if isinstance(layer, old_layer_type):
            setattr(model, name, new_layer)
        else:
            replace_all_layer_type_recursive(layer, old_layer_type, new_layer)


def find_layer_types_recursive(model: nn.Module, layer_types: Collection[type[nn.Module]]) -> list[nn.Module]:
    """All sub-modules (not ``model`` itself) whose exact type is in ``layer_types`` (no subclasses).

    Args:
        model: the module searched.
        layer_types: the classes, e.g. ``[nn.Conv2d]``.

    Returns:
        The matching modules, depth-first in registration order.
    """
    types = tuple(layer_types)
    return find_layer_predicate_recursive(model, lambda layer: type(layer) in types)


def find_layer_predicate_recursive(model: nn.Module, predicate: Callable[[nn.Module], bool]) -> list[nn.Module]:
    """All sub-modules (not ``model`` itself) for which ``predicate`` is true.

    Args:
        model: the module searched.
        predicate: called on each sub-module.

    Returns:
        The matching modules, depth-first in registration order, a module before its children.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> find_layer_predicate_recursive(model, lambda m: hasattr(m, "weight"))
        [Linear(in_features=2, out_features=2, bias=True)]
    """
    result: list[nn.Module] = []
    for _, layer in model.named_children():
        if predicate(layer):
            result.append(layer)
        result.extend(find_layer_predicate_recursive(layer, predicate))
    return result
