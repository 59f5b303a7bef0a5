"""The one driver of every forward camkit runs itself (explain, compare, dataset runs, the grad-cam door)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from camkit.engine._capture import Capture
from camkit.engine._gate import eval_mode, input_errors
from camkit.engine._inputs import ModelInput

__all__ = ["forward"]


@contextlib.contextmanager
def forward(
    model: nn.Module,
    capture: Capture,
    call: ModelInput,
    *,
    gradients: bool,
    full_graph: bool = False,
    argument: str = "x",
) -> Iterator[Any]:
    """Every forward camkit runs itself goes through here; yields the model output.

    The policy, in one place: the model is in eval mode for the block (every flag restored on
    exit), outside ``inference_mode``; only ``capture`` records the forward (other extractors on
    the model ignore it); with ``gradients`` the inputs are cloned out of inference mode (such
    tensors cannot enter a graph) and the forward runs on the lean path (no graph before the
    target layers) unless ``full_graph``; without, no graph at all. Bad inputs get an error that
    names the fix (``argument`` is the input's name in it).

    Args:
        model: the model.
        capture: the attached capture that records the forward.
        call: the model's input.
        gradients: the block differentiates the output.
        full_graph: record the whole graph (differentiable maps, ``create_graph``).
        argument: the name of the input in error messages.

    Yields:
        The model output.
    """
    grad_mode = torch.enable_grad() if gradients or full_graph else torch.no_grad()
    with eval_mode(model), torch.inference_mode(False), grad_mode:
        if gradients or full_graph:
            call = call.map_tensors(lambda t: t.clone() if torch.is_inference(t) else t)
        lean = capture.lean() if gradients and not full_graph else contextlib.nullcontext()
        with capture.exclusive(), lean, input_errors(call.image, model, argument):
            if not capture.attached:  # a model that takes no hooks (TorchScript, black-box methods): record its input
                capture._input_hook(model, call.args, call.kwargs)
            scores = call(model)
        yield scores
