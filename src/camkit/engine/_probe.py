"""Re-running the model for perturbation and noise methods, without touching its state.

:class:`ModelProbe` is what the engine hands a weight function as ``ctx.probe``. Every forward
it runs is in eval mode (no BatchNorm update), with every other camkit hook paused.

Methods that replace the target layer's output (AblationCAM, Recipro-CAM) call
:meth:`ModelProbe.replaced_scores`. Its fast path runs the layers before the target once per
sample and expands the batch at the target layer, so only the rest of the network runs on the
modified activations. A skip connection that starts before the layer and joins after it still
works when it broadcasts from one sample; anything else (e.g. a concatenation) raises, and the
probe falls back to full forwards. The first call of each probe also checks the fast result
against a full forward on one row and keeps the full path if they differ.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from camkit.engine._capture import Capture
from camkit.engine._gate import eval_mode, paused
from camkit.engine._inputs import ModelInput
from camkit.engine._progress import Progress
from camkit.registry import Probe
from camkit.reshape import grid_index, scatter_grid

__all__ = ["GridProbe", "ModelProbe", "perturbed_forward"]

logger = logging.getLogger("camkit")

REFORWARD_MODES = ("auto", "fast", "full")

#: On the fast re-forward path, replaced activations per forward are capped at this many bytes.
FAST_CHUNK_BYTES = 64 * 2**20


# Models whose forward failed on a channels-last batch (e.g. a ``.view`` of the input): contiguous only.
_CONTIGUOUS_ONLY: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()

T = TypeVar("T")


def _channels_last(model: nn.Module, inputs: Tensor) -> Tensor | None:
    """``inputs`` in channels-last order for a perturbation forward on CPU, or ``None`` to keep them."""
    if inputs.ndim != 4 or inputs.device.type != "cpu" or not inputs.is_floating_point():
        return None
    if inputs.is_contiguous(memory_format=torch.channels_last) or _CONTIGUOUS_ONLY.get(model, False):
        return None
    return inputs.contiguous(memory_format=torch.channels_last)


def perturbed_forward(model: nn.Module, inputs: Tensor, run: Callable[[Tensor], T]) -> T:
    """``run(inputs)`` for a batch camkit built itself (masked, noisy, ...), in the fastest memory order.

    On CPU, 4-D image batches go in channels-last order: convolutions run 1.3x (resnet18) to
    1.5-1.9x (mobilenet_v2, EfficientNet-Lite0) faster on them on this project's CPU (batch 32,
    inference mode), and the scores agree with contiguous ones to float rounding. A model whose
    forward fails on such a batch (e.g. a ``.view`` of its input) is remembered and gets the
    batch as given from then on. The forward that captures the activations never comes here.

    Args:
        model: the model ``run`` calls.
        inputs: the batch.
        run: calls the model on a batch and returns what the caller needs.

    Returns:
        What ``run`` returns.
    """
    fast = _channels_last(model, inputs)
    if fast is not None:
        try:
            return run(fast)
        except RuntimeError as exc:
            _CONTIGUOUS_ONLY[model] = True
            logger.info("channels-last batches fail on this model (%s); using contiguous ones", exc)
    return run(inputs)


class ModelProbe:
    """Re-runs the model for the method weighting target layer ``layer``.

    Args:
        model: the model.
        capture: the capture whose hooks sit on the target layers.
        target: the target that turns an output into per-row scalars.
        layer: which target layer the calling weight function works on.
        batch_size: how many perturbed inputs a method should send per forward.
        reforward: ``"auto"`` (fast path, checked, with fallback), ``"fast"`` or ``"full"``.
        progress: draw a progress line for :meth:`chunks` (``None``: only on a terminal, and only
            for runs of at least 10 forwards).

    Raises:
        ValueError: for an unknown ``reforward`` mode.
    """

    def __init__(
        self,
        model: nn.Module,
        capture: Capture,
        target: Any,
        layer: int,
        batch_size: int,
        reforward: str = "auto",
        progress: bool | None = None,
    ) -> None:
        if reforward not in REFORWARD_MODES:
            raise ValueError(f"reforward must be one of {REFORWARD_MODES}, got {reforward!r}")
        self.model = model
        self.capture = capture
        self.target = target
        self.layer = layer
        self.batch_size = batch_size
        self.reforward = reforward
        self.path: str | None = None if reforward == "auto" else reforward
        self.progress = progress
        self.fast_chunk_bytes = FAST_CHUNK_BYTES

    def chunks(
        self, rows: int, repeat: int = 1, label: str = "inputs", row_bytes: int | None = None
    ) -> Iterator[tuple[int, slice]]:
        """Split ``rows`` perturbed inputs into forwards, ``repeat`` times over.

        Each forward gets ``batch_size`` rows. Methods that replace the target layer's output
        pass ``row_bytes`` (the size of one replaced activation): once :meth:`replaced_scores` has
        settled on the fast path, a forward runs only the layers after the target layer, so it
        takes as many rows as fit in ``fast_chunk_bytes`` (at least ``batch_size``). A progress
        line is drawn while it runs (see ``progress``).

        Args:
            rows: number of perturbed inputs per repeat.
            repeat: how many times the whole set is run (e.g. noise samples).
            label: what the progress line counts.
            row_bytes: bytes of one replaced activation (replacement methods only).

        Yields:
            ``(repeat index, slice of rows)``.
        """
        forwards = -(-rows // self.batch_size) * repeat
        enabled = self.progress
        if enabled is None and forwards < 10:
            enabled = False
        bar = Progress(rows * repeat, label, enabled)
        try:
            for index in range(repeat):
                start = 0
                while start < rows:
                    size = self.batch_size
                    if row_bytes and self.path == "fast":
                        size = max(size, self.fast_chunk_bytes // max(row_bytes, 1))
                    stop = min(start + size, rows)
                    yield index, slice(start, stop)
                    bar.update(stop - start)
                    start = stop
        finally:
            bar.close()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast the captured forward ran under (re-forwards must match its dtypes)."""
        state = self.capture.autocast
        return contextlib.nullcontext() if state is None else torch.autocast(state[0], dtype=state[1])

    def _call(self, inputs: Tensor, rows: Tensor, call: ModelInput | None) -> Any:
        """The model on ``inputs`` as its image; the other arguments of ``call`` (if any) repeated by ``rows``."""
        return self.model(inputs) if call is None else call.replace(inputs, rows)(self.model)

    def scores(self, inputs: Tensor, rows: Tensor) -> Tensor:
        """Target scores of ``inputs`` under ``inference_mode`` in eval mode, hooks paused.

        Args:
            inputs: a batch of (perturbed) images; the model's other arguments, if any, are
                repeated along the batch (row ``b`` from sample ``rows[b]``).
            rows: sample index of each input row.

        Returns:
            ``(B,)`` scores.
        """
        with paused(), eval_mode(self.model), torch.inference_mode(), self._autocast():

            def forward(batch: Tensor) -> Tensor:
                scores: Tensor = self.target(self._call(batch, rows, self.capture.call), rows)
                return scores

            return perturbed_forward(self.model, inputs, forward)

    def gradients(self, inputs: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Activation and ``dY/dA`` at this layer for ``inputs``, in eval mode.

        The forward records no graph before this layer, and on CPU takes the batch in channels-last
        order like :meth:`scores` (see :func:`perturbed_forward`).

        Args:
            inputs: a batch of (noisy) images (other arguments as in :meth:`scores`).
            rows: sample index of each input row.

        Returns:
            The activation and its gradient, both detached.
        """
        call = self.capture.call  # read before recording() gives the capture fresh storage
        autocast = self._autocast()  # read before recording() gives the capture fresh storage
        with self.capture.recording() as rec, eval_mode(self.model), torch.enable_grad(), autocast:
            with rec.lean():
                out = perturbed_forward(self.model, inputs, lambda batch: self._call(batch, rows, call))
            score = self.target(out, rows).sum()
            grads = rec.gradients(score)
            return rec.activations()[self.layer], grads[self.layer].detach()

    def input_gradients(self, inputs: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Target scores of ``inputs`` and their gradient with respect to ``inputs``, in eval mode, hooks paused.

        For methods that optimise a mask of the input (Opti-CAM). Only ``inputs`` is differentiated
        (``torch.autograd.grad``): no parameter's ``.grad`` changes.

        Args:
            inputs: a batch of (masked) images (other arguments as in :meth:`scores`).
            rows: sample index of each input row.

        Returns:
            The scores ``(B,)`` and ``d score_b / d inputs_b``, both detached.
        """
        with paused(), eval_mode(self.model), torch.inference_mode(False), torch.enable_grad(), self._autocast():
            leaf = inputs.detach().clone().requires_grad_(True)
            scores: Tensor = self.target(self._call(leaf, rows, self.capture.call), rows)
            (grad,) = torch.autograd.grad(scores.sum(), leaf)
        return scores.detach(), grad

    def _run_replaced(self, call: ModelInput, activations: Tensor, rows: Tensor) -> Tensor:
        with (
            self.capture.replacing(self.layer, activations),
            eval_mode(self.model),
            torch.inference_mode(),
            self._autocast(),
        ):
            return self.target(call(self.model), rows)  # type: ignore[no-any-return]

    def _full(self, call: ModelInput, activations: Tensor, rows: Tensor) -> Tensor:
        return self._run_replaced(call.select(rows), activations, rows)

    def _fast(self, call: ModelInput, activations: Tensor, rows: Tensor) -> Tensor:
        out: Tensor | None = None
        for sample in torch.unique(rows).tolist():
            pick = (rows == sample).nonzero().squeeze(1)
            one = call.select(torch.tensor([sample], device=call.image.device))
            scores = self._run_replaced(one, activations[pick], rows[pick])
            if scores.shape != pick.shape:
                raise RuntimeError(f"fast re-forward returned {tuple(scores.shape)} scores for {pick.numel()} rows")
            if out is None:
                out = scores.new_empty(rows.shape[0])
            out[pick] = scores
        if out is None:
            raise RuntimeError("no rows to re-run")
        return out

    def replaced_scores(self, activations: Tensor, rows: Tensor) -> Tensor:
        """Target scores when this layer outputs ``activations`` instead of its own output.

        Args:
            activations: ``(B, C, *S)`` replacement outputs, row ``b`` for sample ``rows[b]``.
            rows: sample index of each row.

        Returns:
            ``(B,)`` scores.

        Raises:
            ValueError: when the model input was not captured.
        """
        x = self.capture.call
        if x is None:
            raise ValueError("re-running the model needs its input: run the forward after creating the extractor")
        activations = activations.to(self.capture.sources()[self.layer].dtype)
        if self.path == "full":
            return self._full(x, activations, rows)
        try:
            fast = self._fast(x, activations, rows)
        except RuntimeError as exc:
            if self.reforward == "fast":
                raise
            logger.info("fast re-forward does not apply (%s); running full forwards", exc)
            self.path = "full"
            return self._full(x, activations, rows)
        if self.path is None:
            check = slice(0, 1)
            full = self._full(x, activations[check], rows[check])
            scale = float(full.abs().max()) + 1e-12
            if not torch.allclose(fast[check], full, rtol=1e-4, atol=1e-5 * scale):
                logger.info("fast re-forward disagrees with a full forward; running full forwards")
                self.path = "full"
                return self._full(x, activations, rows)
            self.path = "fast"
        return fast


class GridProbe:
    """A probe seen through a grid layout: methods work on grids, the model gets its own layout back.

    Replaced activations are written back with :func:`camkit.reshape.scatter_grid` (values the
    layout drops, such as class tokens, keep the captured values of their sample).
    """

    def __init__(self, probe: Probe, reshape: Callable[[Tensor], Tensor], source: Tensor) -> None:
        self.probe = probe
        self.reshape = reshape
        self.source = source
        self.batch_size = probe.batch_size
        self._index: Tensor | None = None

    def chunks(
        self, rows: int, repeat: int = 1, label: str = "inputs", row_bytes: int | None = None
    ) -> Iterator[tuple[int, slice]]:
        """The wrapped probe's chunks."""
        return self.probe.chunks(rows, repeat, label, row_bytes)

    def scores(self, inputs: Tensor, rows: Tensor) -> Tensor:
        """The wrapped probe's scores."""
        return self.probe.scores(inputs, rows)

    def gradients(self, inputs: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Activation and gradient at the layer, as grids."""
        act, grad = self.probe.gradients(inputs, rows)
        return self.reshape(act).contiguous(), self.reshape(grad).contiguous()

    def input_gradients(self, inputs: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The wrapped probe's scores and input gradients."""
        return self.probe.input_gradients(inputs, rows)

    def replaced_scores(self, activations: Tensor, rows: Tensor) -> Tensor:
        """Scores when the layer outputs these grids (written back into its layout)."""
        if self._index is None:
            if not isinstance(self.source, Tensor):  # a StructuredOutput (the FPN's OrderedDict, ...)
                kind = type(self.source).__mro__[2].__name__  # the output's own kind (OrderedDict, tuple, ...)
                raise ValueError(
                    f"this method replaces the target layer's output, but that output is a structure of tensors "
                    f"({kind}) that reshape_transform turns into one map: a modified map "
                    "cannot be written back into it; use a method that does not replace activations (EigenCAM, "
                    "Grad-CAM and the other gradient methods, ScoreCAM) or a layer that outputs one tensor"
                )
            self._index = grid_index(self.reshape, self.source[:1])
        base = self.source[rows.to(self.source.device)]
        return self.probe.replaced_scores(scatter_grid(activations, base, self._index), rows)
