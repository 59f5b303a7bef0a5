"""Tiny models, the three front doors, and state snapshots shared by the reliability tests.

Every test here is generated over the registry (``camkit.list_methods()``) and over camkit's three
front doors, so a new method is covered without new test code:

* ``"torchcam"``: the TorchCAM-style extractor class of the method (``camkit.methods.GradCAM``, ...,
  or :class:`camkit.CAMExtractor` for a method without its own class), used in a ``with`` block
  around the user's forward;
* ``"gradcam"``: the pytorch-grad-cam-style :class:`camkit.compat.gradcam.CAMMethod`;
* ``"explain"``: :func:`camkit.explain`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

import camkit
from camkit.compat.gradcam import CAMMethod
from camkit.engine import CAMExtractor
from camkit.engine._gate import GATE
from camkit.explanation import extractor_class
from camkit.registry import get_method
from camkit.targets import ClassifierOutputTarget

METHODS = camkit.list_methods()
FAMILIES: dict[str, list[str]] = {}
for _name in METHODS:
    FAMILIES.setdefault(camkit.get_method(_name).family, []).append(_name)
DOORS = ("torchcam", "gradcam", "explain")
#: The target layer of :func:`small_cnn`: the second convolution (8x8 output for 8x8 inputs).
LAYER = "3"
#: The non-spatial layers of :func:`small_cnn` (Flatten, Linear).
FLAT_LAYERS = ("6", "7")
CLASSES = 3


def small_cnn(inplace: bool = False, channels: int = 4, seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU-Conv-ReLU-pool-Linear with few channels, so perturbation methods stay fast."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, CLASSES),
    )
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        model[1].running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
        model[1].running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return model.eval()


def twin(model: nn.Module, **kwargs: Any) -> nn.Sequential:
    """A fresh :func:`small_cnn` with ``model``'s weights (e.g. ``inplace=True``)."""
    other = small_cnn(**kwargs)
    other.load_state_dict(model.state_dict())
    return other.train(model.training)


def options(name: str, seed: int = 0) -> dict[str, Any]:
    """Method options every door accepts: few noise samples, masks and steps, a seeded generator (reproducible maps)."""
    wanted = {"num_samples": 2, "num_masks": 8, "steps": 3, "window": 4, "stride": 2}
    wanted["generator"] = torch.Generator().manual_seed(seed)
    return {k: v for k, v in wanted.items() if k in get_method(name).options}


def torchcam(name: str, model: nn.Module, layer: Any = LAYER, **opts: Any) -> CAMExtractor:
    """The TorchCAM-style extractor class of ``name`` on ``model`` (hooks attached)."""
    cls = extractor_class(name)
    extra: dict[str, Any] = {"method": name} if cls is CAMExtractor else {}
    return cls(model, target_layer=layer, **extra, **{**options(name), **opts})


def maps(
    door: str,
    name: str,
    model: nn.Module,
    x: Any,
    class_idx: int | Sequence[int] = 0,
    layer: Any = LAYER,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    **opts: Any,
) -> Tensor:
    """The normalized maps ``(N, H, W)`` of one method through one front door.

    Args:
        door: ``"torchcam"``, ``"gradcam"`` or ``"explain"``.
        name: registry name.
        model: the model.
        x: its input.
        class_idx: one class for the batch or one per sample.
        layer: target layer (name or module).
        forward: how the TorchCAM door runs the user's forward (default ``model(x)``).
        **opts: method options (defaults: :func:`options`).

    Returns:
        The maps as a tensor.
    """
    merged = {**options(name), **opts}
    if door == "torchcam":
        with torchcam(name, model, layer, **merged) as extractor:
            scores = forward(model, x) if forward is not None else model(x)
            return extractor(class_idx, scores)[0]
    if door == "gradcam":
        classes = [class_idx] if isinstance(class_idx, int) else list(class_idx)
        cam = CAMMethod(model, layer if isinstance(layer, list) else [layer], method=name, **merged)
        return cam.compute(x, [ClassifierOutputTarget(c) for c in classes])
    if door == "explain":
        return camkit.explain(model, x, method=name, target_layer=layer, class_idx=class_idx, **merged).maps[name][:, 0]
    raise ValueError(f"unknown door {door!r}")


class Wrapped(nn.Module):
    """``small_cnn`` whose output is wrapped: a tuple, a list, a dict, a ``ModelOutput``, ..."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = small_cnn()
        self.kind = kind

    def forward(self, x: Tensor) -> Any:
        y = self.net(x)
        if self.kind == "tuple":
            return y, y.detach() * 0
        if self.kind == "tuple_none_first":
            return None, y
        if self.kind == "list":
            return [y]
        if self.kind == "dict_logits":
            return {"logits": y, "aux": 2 * y}
        if self.kind == "model_output":
            from transformers.modeling_outputs import ImageClassifierOutput

            return ImageClassifierOutput(logits=y)
        if self.kind == "dict_other":
            return {"out": y}
        if self.kind == "string":
            return "not a tensor"
        return y.sum()  # "scalar"


GOOD_OUTPUTS = ("tuple", "tuple_none_first", "list", "dict_logits", "model_output")
BAD_OUTPUTS = ("dict_other", "string", "scalar")


# state ---------------------------------------------------------------------------------------
_MODULE_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_forward_hooks_always_called",
)


def hooks(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Ids of every hook on the model: module hooks of all kinds, tensor hooks on parameters, global hooks."""
    found: dict[str, tuple[int, ...]] = {}
    for name, module in model.named_modules():
        for kind in _MODULE_HOOKS:
            found[f"{name}:{kind}"] = tuple(getattr(module, kind, None) or ())
    for name, param in model.named_parameters():
        found[f"{name}:tensor"] = tuple(param._backward_hooks or ())
        found[f"{name}:post_accumulate"] = tuple(getattr(param, "_post_accumulate_grad_hooks", None) or ())
    for kind in _GLOBAL_HOOKS:
        found[f"global:{kind}"] = tuple(getattr(torch_module, kind, None) or ())
    return found


def hook_count(model: nn.Module) -> int:
    """Number of hooks of every kind on the model (see :func:`hooks`)."""
    return sum(len(ids) for ids in hooks(model).values())


@dataclass
class Snapshot:
    """Everything a CAM call must leave as it was."""

    training: list[bool]
    requires_grad: list[bool]
    grads: list[Tensor | None]
    grad_values: list[Tensor | None]
    state: dict[str, Tensor]
    hooks: dict[str, tuple[int, ...]]
    grad_mode: bool
    inference_mode: bool
    gate: object


def snapshot(model: nn.Module) -> Snapshot:
    """Flags, ``.grad`` (object and values), state dict, hooks, grad mode and camkit's hook gate."""
    params = list(model.parameters())
    return Snapshot(
        training=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in params],
        grads=[p.grad for p in params],
        grad_values=[None if p.grad is None else p.grad.clone() for p in params],
        state={k: v.clone() for k, v in model.state_dict().items()},
        hooks=hooks(model),
        grad_mode=torch.is_grad_enabled(),
        inference_mode=torch.is_inference_mode_enabled(),
        gate=GATE.get(),
    )


def assert_unchanged(before: Snapshot, model: nn.Module) -> None:
    """Assert that ``model`` (and the thread's autograd modes) are as in ``before``."""
    after = snapshot(model)
    assert after.training == before.training, "train/eval flags changed"
    assert after.requires_grad == before.requires_grad, "requires_grad changed"
    for old, new, value, param in zip(before.grads, after.grads, before.grad_values, model.parameters(), strict=True):
        assert new is old, "a parameter's .grad was replaced"
        if value is not None:
            assert param.grad is not None
            assert torch.equal(param.grad, value), "a parameter's .grad changed"
    for key, value in before.state.items():
        assert torch.equal(after.state[key], value), f"{key} changed"
    assert after.hooks == before.hooks, "hooks were added or removed"
    assert after.grad_mode == before.grad_mode, "grad mode changed"
    assert after.inference_mode == before.inference_mode, "inference mode changed"
    assert after.gate is before.gate, "camkit's hook gate was not restored"


def prepare_user_model(model: nn.Module) -> Counter[str]:
    """Put a user's state on ``model``: filled ``.grad``, a frozen layer, mixed flags and hooks of every kind.

    Returns:
        Counts of how often each user hook fired (updated in place).
    """
    fired: Counter[str] = Counter()
    generator = torch.Generator().manual_seed(7)
    params = list(model.parameters())
    for index, param in enumerate(params):
        if index % 2 == 0:  # half the parameters have a .grad from the user's training step
            param.grad = torch.randn(param.shape, generator=generator)
    params[0].requires_grad_(False)  # a frozen first conv
    model.train()
    model[1].eval()  # a BatchNorm in eval mode inside a training model
    model[0].register_forward_hook(lambda *_: fired.update(["forward"]))
    model[3].register_forward_pre_hook(lambda *_: fired.update(["forward_pre"]))
    model[-1].register_full_backward_hook(lambda *_: fired.update(["backward"]))
    params[-1].register_hook(lambda grad: fired.update(["tensor"]))
    params[-1].register_post_accumulate_grad_hook(lambda _p: fired.update(["post_accumulate"]))
    return fired


def user_training_step(model: nn.Module, x: Tensor) -> None:
    """The user's own forward + backward (tests may call ``backward``; camkit never does)."""
    model(x).sum().backward()


# memory --------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``), after giving freed heap pages back.

    glibc keeps freed memory mapped, so without ``malloc_trim`` the RSS also counts pages freed by
    earlier tests that a later allocation pattern happens not to reuse.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import resource

    return pages * resource.getpagesize()


def live_tensors() -> int:
    """Number of tensors alive in this process after a full garbage collection."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), Tensor))
