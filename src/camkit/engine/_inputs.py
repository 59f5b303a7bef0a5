"""What a model is called with: a tensor, a tuple of positional arguments, or a dict of keywords.

camkit calls the model for the user in many places (:func:`camkit.explain`, the pytorch-grad-cam
style front door, :func:`camkit.compare`, perturbation methods, metrics). Everywhere, the input may
be one tensor, a tuple (``model(*inputs)``) or a dict (``model(**inputs)``, e.g. a Hugging Face
processor's output). One of the tensors is *the image*: the one perturbation methods mask, blur or
replace, and whose spatial size the maps are resized to. The others are repeated along the batch
with the rows of the image they belong to.

Which argument is the image (:meth:`ModelInput.of`): ``image_arg`` (a position or a keyword) when
given; else ``pixel_values`` when it is a keyword; else the first floating-point tensor with at
least one spatial dim (``ndim >= 3``) among the positional, then the keyword arguments.

Example:
    >>> import torch
    >>> call = ModelInput.of((torch.rand(2, 3, 8, 8), torch.rand(2, 5)))
    >>> call.image.shape, call.batch
    (torch.Size([2, 3, 8, 8]), 2)
    >>> picked = call.replace(torch.zeros(3, 3, 8, 8), torch.tensor([0, 0, 1]))
    >>> picked.args[1].shape
    torch.Size([3, 5])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["ImageArg", "ModelInput"]

#: which argument is the image: a position in the tuple, or a keyword of the dict
ImageArg = int | str | None


def _is_image(value: Any) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point() and value.ndim >= 3


class ModelInput:
    """Positional and keyword arguments of a model call, one of which is the image.

    Args:
        args: positional arguments.
        kwargs: keyword arguments.
        image: position (int) or keyword (str) of the image.
    """

    def __init__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], image: int | str) -> None:
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.image_key = image
        found = self.args[image] if isinstance(image, int) else self.kwargs[image]
        if not isinstance(found, Tensor):
            raise TypeError(f"the image argument {image!r} must be a tensor, got {type(found).__name__}")
        self.image: Tensor = found

    @classmethod
    def of(cls, value: Any, image_arg: ImageArg = None) -> ModelInput:
        """Read a tensor, a tuple/list of positional arguments, or a dict of keyword arguments.

        Args:
            value: what the model is called with.
            image_arg: position or keyword of the image (default: see the module docs).

        Returns:
            The call.

        Raises:
            TypeError: when ``value`` is none of the three.
            ValueError: when no image can be found or ``image_arg`` names no argument.
        """
        if isinstance(value, Tensor):
            if image_arg not in (None, 0):
                raise ValueError(f"image_arg={image_arg!r} names an argument, but the input is one tensor")
            return cls((value,), {}, 0)
        if isinstance(value, (tuple, list)):
            return cls.from_call(tuple(value), {}, image_arg)
        if isinstance(value, Mapping):
            return cls.from_call((), {str(k): v for k, v in value.items()}, image_arg)
        raise TypeError(
            f"the model input must be a tensor, a tuple of positional arguments or a dict of keyword "
            f"arguments, got {type(value).__name__}"
        )

    @classmethod
    def from_call(cls, args: tuple[Any, ...], kwargs: Mapping[str, Any], image_arg: ImageArg = None) -> ModelInput:
        """The call ``model(*args, **kwargs)``; see :meth:`of` for ``image_arg``.

        Raises:
            ValueError: when no image can be found or ``image_arg`` names no argument.
        """
        if image_arg is not None:
            if isinstance(image_arg, int) and not isinstance(image_arg, bool) and 0 <= image_arg < len(args):
                return cls(args, kwargs, image_arg)
            if isinstance(image_arg, str) and image_arg in kwargs:
                return cls(args, kwargs, image_arg)
            raise ValueError(
                f"image_arg={image_arg!r} names no argument of the call: it has {len(args)} positional "
                f"argument(s) and the keywords {sorted(kwargs)}"
            )
        if _is_image(kwargs.get("pixel_values")):
            return cls(args, kwargs, "pixel_values")
        for index, item in enumerate(args):
            if _is_image(item):
                return cls(args, kwargs, index)
        for key, item in kwargs.items():
            if _is_image(item):
                return cls(args, kwargs, key)
        kinds = [type(a).__name__ for a in args] + [f"{k}={type(v).__name__}" for k, v in kwargs.items()]
        raise ValueError(
            f"no image (a floating-point tensor (N, C, *S)) among the model's arguments {kinds}: "
            "pass the image as a tensor, or name it with image_arg="
        )

    # --------------------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        """The image's batch size."""
        return int(self.image.shape[0])

    @property
    def single(self) -> bool:
        """Whether the call is one positional tensor (``model(x)``)."""
        return len(self.args) == 1 and not self.kwargs

    def __call__(self, model: Callable[..., Any]) -> Any:
        """Call ``model`` with these arguments."""
        return model(*self.args, **self.kwargs)

    def _map(self, fn: Callable[[Tensor], Tensor], image: Tensor | None) -> ModelInput:
        """Apply ``fn`` to every batched tensor except the image, which becomes ``image`` (if given)."""
        n = self.batch

        def convert(key: int | str, value: Any) -> Any:
            if key == self.image_key and image is not None:
                return image
            if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == n:
                return fn(value)
            return value

        args = tuple(convert(i, v) for i, v in enumerate(self.args))
        kwargs = {k: convert(k, v) for k, v in self.kwargs.items()}
        return ModelInput(args, kwargs, self.image_key)

    def replace(self, image: Tensor, rows: Tensor) -> ModelInput:
        """The call with ``image`` as the image, row ``b`` of the others taken from sample ``rows[b]``.

        Args:
            image: the new image batch ``(B, C, *S)``.
            rows: ``(B,)`` sample index of each row.

        Returns:
            The new call (the other arguments repeated along the batch as ``rows`` says).
        """
        if self.single:
            return ModelInput((image,), {}, 0)
        index = rows.to(self.image.device)
        return self._map(lambda t: t[index.to(t.device)], image)

    def select(self, rows: Tensor) -> ModelInput:
        """Rows ``rows`` of every batched argument, the image included."""
        index = rows.to(self.image.device)
        return self._map(lambda t: t[index.to(t.device)], self.image[index])

    def map_tensors(self, fn: Callable[[Tensor], Tensor]) -> ModelInput:
        """Apply ``fn`` to every tensor argument (e.g. ``lambda t: t.to(device)``)."""

        def convert(value: Any) -> Any:
            return fn(value) if isinstance(value, Tensor) else value

        args = tuple(convert(v) for v in self.args)
        kwargs = {k: convert(v) for k, v in self.kwargs.items()}
        return ModelInput(args, kwargs, self.image_key)

    def with_image(self, image: Tensor) -> ModelInput:
        """The same call with another image of the same batch (e.g. a leaf copy that requires grad)."""
        return self._map(lambda t: t, image)

    def to(self, device: torch.device | None) -> ModelInput:
        """Every tensor argument on ``device`` (``None``: unchanged)."""
        return self if device is None else self.map_tensors(lambda t: t.to(device))
