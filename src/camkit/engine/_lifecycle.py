"""The lifecycle every extractor and wrapper shares: :class:`Lifecycle`, and :class:`HookedExtractor`.

Two kinds of object explain a model. A TorchCAM-style extractor keeps hooks on the model from its
creation to the end of its ``with`` block (:class:`HookedExtractor`); a pytorch-grad-cam-style
class, SESS and the meta methods hook the model only during a call. Both are a
:class:`Lifecycle`: a context manager whose exit calls :meth:`~Lifecycle.release`.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TypeVar

from torch.utils.hooks import RemovableHandle

from camkit.engine._capture import Capture

__all__ = ["HookedExtractor", "Lifecycle"]


_L = TypeVar("_L", bound="Lifecycle")


class Lifecycle:
    """The context-manager base of every camkit extractor and wrapper: leaving ``with`` calls :meth:`release`."""

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Release what this object holds on the model (objects that hook only during a call hold nothing)."""


class HookedExtractor(Lifecycle):
    """The lifecycle every extractor shares: a context manager over one :class:`Capture`.

    Subclasses set ``self._capture`` (attached) in ``__init__``; leaving the ``with`` block removes
    every hook and restores every flag the capture set, also after an exception.
    """

    _capture: Capture

    def _own(self, capture: Capture, enabled: bool) -> None:
        """Attach ``capture`` as this extractor's own.

        Its hooks are removed on ``with`` exit or :meth:`remove_hooks`; an extractor dropped without
        either still takes them away when it is garbage-collected (a safety net, not the way to
        release them).
        """
        self._capture = capture
        capture.enabled = enabled
        capture.attach()
        weakref.finalize(self, capture.remove)

    @property
    def capture(self) -> Capture:
        """The capture this extractor reads (its hooks on the target layers)."""
        return self._capture

    @property
    def hook_handles(self) -> list[RemovableHandle]:
        """The handles of the hooks this extractor holds on the model now (empty once removed).

        TorchCAM's attribute, read-only here: remove the hooks with :meth:`remove_hooks`.
        """
        return list(self._capture._handles)  # the engine's own capture

    @property
    def _hooks_enabled(self) -> bool:
        """TorchCAM's name for whether the hooks record forwards (read-only; see :meth:`enable_hooks`)."""
        return self._capture.enabled

    def release(self) -> None:
        """Remove every hook and forget the captured tensors (what leaving the ``with`` block does)."""
        self.remove_hooks()

    def remove_hooks(self) -> None:
        """Remove every hook this extractor put on the model (and restore the flags it set).

        The captured tensors go too: an extractor without hooks has nothing to explain.
        """
        self._capture.remove()
        self._capture.reset()

    def reset_hooks(self) -> None:
        """Forget the captured tensors (the hooks stay)."""
        self._capture.reset()

    def enable_hooks(self) -> None:
        """Record the following forwards (the default)."""
        self._capture.enabled = True

    def disable_hooks(self) -> None:
        """Ignore the following forwards until :meth:`enable_hooks`."""
        self._capture.enabled = False

    def lean(self) -> contextlib.AbstractContextManager[None]:
        """A block whose forwards record no autograd graph before the target layers (less memory, same maps).

        Run the forward inside it (``with extractor.lean(): scores = model(x)``), then call the
        extractor as usual. Only the layers after the target layers are recorded, so a loss of your
        own on earlier layers cannot be differentiated from that forward: that is why the plain
        forward (full graph) stays the default. See :meth:`camkit.engine.Capture.lean`.

        Example:
            >>> import torch
            >>> from torchvision.models import resnet18
            >>> from camkit.methods import GradCAM
            >>> model = resnet18().eval()
            >>> with GradCAM(model, "layer4") as cam:
            ...     with cam.lean():
            ...         scores = model(torch.rand(1, 3, 64, 64))
            ...     maps = cam(class_idx=3, scores=scores)
            >>> maps[0].shape
            torch.Size([1, 2, 2])
        """
        return self._capture.lean()
