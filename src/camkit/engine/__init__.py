"""The engine: hooks, gradients, model state, layer resolution, re-runs and the extractor lifecycle.

It knows no method by name (methods are registry specs, :mod:`camkit.registry`). Its parts are
private modules behind this public surface:

* ``_gate``: the hook gate (:func:`paused`), model-state restore (:func:`eval_mode`), input checks
  (:func:`input_errors`), :func:`candidate_layers` and :func:`guided_relus`;
* ``_capture`` (with ``_gradients``): :class:`Capture`, the hooks on the target layers, their
  gradients via ``torch.autograd.grad``, and the :class:`Recorded` state of the last forward;
* ``_layers``: :func:`resolve_layers` (names, modules, automatic choice) and :func:`attention_blocks`;
* ``_inputs``: :class:`ModelInput`, a model's call with the image among its arguments;
* ``_probe`` (with ``_batching`` and ``_progress``): :class:`ModelProbe`, the re-runs of
  perturbation methods, and :func:`auto_batch_size`;
* ``_lifecycle``: :class:`Lifecycle` and :class:`HookedExtractor`, the context-manager base of every
  extractor and wrapper;
* ``_extractor``: :class:`CAMExtractor`, a registry method on a capture (the TorchCAM-style call);
* ``_forward``: :func:`forward`, the one driver of the forwards camkit runs itself.
"""

from camkit.engine._batching import CANDIDATES as CANDIDATES
from camkit.engine._batching import CUDA_CANDIDATES as CUDA_CANDIDATES
from camkit.engine._batching import auto_batch_size as auto_batch_size
from camkit.engine._batching import default_batch_size as default_batch_size
from camkit.engine._capture import Capture as Capture
from camkit.engine._capture import Recorded as Recorded
from camkit.engine._extractor import CAMExtractor as CAMExtractor
from camkit.engine._extractor import DisconnectedTargetError as DisconnectedTargetError
from camkit.engine._forward import forward as forward
from camkit.engine._gate import NO_GRAD_HINT as NO_GRAD_HINT
from camkit.engine._gate import autocast_state as autocast_state
from camkit.engine._gate import candidate_layers as candidate_layers
from camkit.engine._gate import eval_mode as eval_mode
from camkit.engine._gate import first_convolution as first_convolution
from camkit.engine._gate import guided_relus as guided_relus
from camkit.engine._gate import input_errors as input_errors
from camkit.engine._gate import input_problem as input_problem
from camkit.engine._gate import module_calls as module_calls
from camkit.engine._gate import output_shapes as output_shapes
from camkit.engine._gate import paused as paused
from camkit.engine._gate import reference_tensor as reference_tensor
from camkit.engine._inputs import ImageArg as ImageArg
from camkit.engine._inputs import ModelInput as ModelInput
from camkit.engine._layers import LayerSpec as LayerSpec
from camkit.engine._layers import attention_blocks as attention_blocks
from camkit.engine._layers import resolve_layers as resolve_layers
from camkit.engine._lifecycle import HookedExtractor as HookedExtractor
from camkit.engine._lifecycle import Lifecycle as Lifecycle
from camkit.engine._probe import REFORWARD_MODES as REFORWARD_MODES
from camkit.engine._probe import GridProbe as GridProbe
from camkit.engine._probe import ModelProbe as ModelProbe
from camkit.engine._probe import perturbed_forward as perturbed_forward
from camkit.engine._progress import Progress as Progress

__all__ = [
    "CANDIDATES",
    "CUDA_CANDIDATES",
    "NO_GRAD_HINT",
    "REFORWARD_MODES",
    "CAMExtractor",
    "Capture",
    "GridProbe",
    "HookedExtractor",
    "ImageArg",
    "LayerSpec",
    "Lifecycle",
    "ModelInput",
    "ModelProbe",
    "Progress",
    "Recorded",
    "attention_blocks",
    "auto_batch_size",
    "autocast_state",
    "candidate_layers",
    "default_batch_size",
    "eval_mode",
    "first_convolution",
    "forward",
    "guided_relus",
    "input_errors",
    "input_problem",
    "module_calls",
    "output_shapes",
    "paused",
    "perturbed_forward",
    "reference_tensor",
    "resolve_layers",
]
