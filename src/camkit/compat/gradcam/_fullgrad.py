"""pytorch-grad-cam's ``FullGrad`` on camkit's :class:`camkit.methods.FullGrad`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from camkit.engine import eval_mode, input_errors
from camkit.inputs import ModelInput
from camkit.methods.fullgrad import FullGrad, bias_layers
from camkit.targets import Target

from ._adapter import detach_output
from ._base import CAMMethod

__all__ = ["FullGradMethod"]

logger = logging.getLogger("camkit")


class FullGradMethod(CAMMethod):
    """FullGrad over every biased layer; ``target_layers`` is ignored, as in pytorch-grad-cam."""

    def _raw_maps(
        self, call: ModelInput, make_target: Callable[[Any], Target], eigen_smooth: bool
    ) -> tuple[list[Tensor], Any]:
        if self.target_layers:
            logger.warning("FullGrad uses every layer with a bias; target_layers is ignored")
        if eigen_smooth:
            logger.warning("FullGrad has no eigen_smooth variant in camkit; it is ignored")
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            eval_mode(self.model),
            FullGrad(self.model, bias_layers(self.model), image_arg=call.image_key) as extractor,
        ):
            with extractor.own_forward(), input_errors(call.image, self.model, "input_tensor"):
                outputs = call.map_tensors(lambda t: t.clone() if torch.is_inference(t) else t)(self.model)
            maps = extractor(scores=outputs, targets=make_target(outputs), normalized=False)
        return maps, detach_output(outputs)
