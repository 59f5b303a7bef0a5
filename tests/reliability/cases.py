"""Hypothesis strategies of bad (and good) calls for each front door, with what each must give.

A :class:`Case` runs one call and says what it must give: either maps equal to a reference
computed the canonical way, or a ``ValueError``/``TypeError`` whose message matches every pattern
(the argument's name and the fix). Known gaps (in files other engineers own) are left out of the
strategies and pinned by strict ``xfail`` tests in ``test_bad_inputs.py`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from torch import Tensor, nn

import camkit
from camkit.compat.gradcam import CAMMethod
from camkit.targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from reliability.support import (
    BAD_OUTPUTS,
    CLASSES,
    FLAT_LAYERS,
    GOOD_OUTPUTS,
    LAYER,
    METHODS,
    Wrapped,
    maps,
    options,
    small_cnn,
    torchcam,
    twin,
)

N = 2  #: batch of every generated input
SPATIAL = ("0", "3", "4")  #: layers of small_cnn with an 8x8 output
ARGUMENT_FIX = {  # what an error about each argument must say: its name, then the fix
    "class_idx": (r"class_idx", r"valid indices|must be|must contain|one class index per sample|pass "),
    "layer": (r"layer", r"did you mean|submodules|named_modules|spatial dims|pick a|not a submodule|at least one"),
    "layer_type": (r"target_layer", r"module, a dotted name"),
    "grad": (r"no_grad|inference_mode", r"gradients enabled|gradient-free"),
    "scores": (r"scores", r"forward that produced|same forward|num_classes|scores=model\(x\)|batch dimension"),
    "no_graph": (r"autograd graph|no_grad", r"gradients enabled|gradient-free"),
    "output": (r"output", r"output_key|target|class_idx"),
    "top_class": (r"targets", r"targets=\[|output_key|target callable"),
    "batch_size": (r"batch_size", r"positive int"),
    "method": (r"method", r"choose one of"),
    "targets": (
        r"target|category|class_idx",
        r"one target per image|list|ClassifierOutputTarget|must be an int >= 0|valid indices",
    ),
    "input_tensor": (r"input_tensor", r"\(N, C, H, W\)|unsqueeze|tensor, a tuple"),
    "topk": (r"topk", r"positive int"),
    "images": (r"image", r"at least one|PNG|does not exist"),
}


@dataclass
class Case:
    """One call and its expected outcome.

    Attributes:
        label: what the case is (shown when it fails).
        run: makes the call, returns the maps.
        model: the model whose state must be unchanged afterwards.
        reference: the maps the call must give (``None``: any finite maps in ``[0, 1]``).
        error: the argument whose error is expected (a key of :data:`ARGUMENT_FIX`), or ``None``.
        shape: the expected maps' shape.
        atol: tolerance of the comparison with ``reference``.
        errors: the exception types accepted for ``error``.
    """

    label: str
    run: Callable[[], Tensor]
    model: nn.Module
    reference: Callable[[], Tensor] | None = None
    error: str | None = None
    shape: tuple[int, ...] = (N, 8, 8)
    atol: float = 0.0
    errors: tuple[type[Exception], ...] = field(default=(ValueError, TypeError))


def _input(draw: st.DrawFn) -> Tensor:
    seed = draw(st.integers(0, 2**16))
    return torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _valid_classes(value: Any, door: str) -> list[int] | None:
    """The per-sample classes ``value`` stands for, or ``None`` when it is invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return [int(value)] * N if 0 <= value < CLASSES else None
    if door == "explain" and isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point():
        return _valid_classes(int(value), door)
    in_range = isinstance(value, list) and all(type(v) is int and 0 <= v < CLASSES for v in value)
    if in_range and (len(value) == N or (door == "explain" and len(value) == 1)):
        return value * N if len(value) == 1 else value
    return None


CLASS_VALUES = st.one_of(
    st.integers(-3, CLASSES + 2),
    st.lists(st.integers(-2, CLASSES + 1), max_size=4),
    st.builds(np.int64, st.integers(-1, CLASSES)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.booleans(), min_size=N, max_size=N),
    st.builds(torch.tensor, st.integers(0, CLASSES - 1)),
    st.text(max_size=2),
)


def class_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """``class_idx`` of the TorchCAM door and of ``explain``: ints, lists, floats, bools, tensors."""
    value = draw(CLASS_VALUES)
    if door == "explain":
        assume(not isinstance(value, str))  # a gap, see test_bad_inputs.py
    model, x = small_cnn(), _input(draw)
    valid = _valid_classes(value, door)
    return Case(
        f"{door} {name} class_idx={value!r}",
        lambda: maps(door, name, model, x, class_idx=value),
        model,
        reference=None if valid is None else (lambda: maps(door, name, model, x, class_idx=valid)),
        error=None if valid is not None else "class_idx",
    )


def layer_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """``target_layer`` / ``target_layers``: names, modules, foreign modules, flat layers, wrong types."""
    model, x = small_cnn(), _input(draw)
    names = {n for n, _ in model.named_modules()}
    value = draw(
        st.one_of(
            st.sampled_from(SPATIAL),
            st.sampled_from(FLAT_LAYERS),
            st.text(alphabet="abl.0123_", max_size=8).filter(lambda s: s not in names),
            st.sampled_from(["3.weight", "1.running_mean", "foreign", "empty list", "bad in list"]),
            st.sampled_from([3, 1.5, b"3"]),
        )
    )
    layer: Any = value
    error: str | None = None
    reference = None
    if value == "foreign":
        layer, error = nn.Conv2d(4, 4, 1), "layer"
    elif value == "empty list":
        layer, error = [], "layer"
    elif value == "bad in list":
        layer, error = ["3", "nope"], "layer"
    elif not isinstance(value, str):
        error = "layer_type"
    elif value in SPATIAL:
        layer = value if draw(st.booleans()) else [value]
        module = model[int(value)]
        reference = lambda: maps(door, name, model, x, layer=module)  # noqa: E731  (the module itself)
    else:
        error = "layer"
    if door == "gradcam" and camkit.get_method(name).layers is not None:
        error, reference = None, None  # pytorch-grad-cam's FullGrad ignores target_layers: so does that door
    if camkit.get_method(name).black_box:
        error, reference = None, None  # a black-box method reads no layer: every door ignores target_layer
    return Case(
        f"{door} {name} layer={value!r}", lambda: maps(door, name, model, x, layer=layer), model, reference, error
    )


def _needs_graph(name: str) -> bool:
    spec = camkit.get_method(name)
    return spec.needs_gradients and spec.needs_scores


def torchcam_input_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """Inputs of the TorchCAM door: channels-last, empty batch, forwards without a graph, low precision."""
    model, x = small_cnn(), _input(draw)
    kind = draw(st.sampled_from(["channels_last", "empty", "no_grad", "inference_mode", "half", "bfloat16"]))
    plain = lambda: maps(door, name, model, x)  # noqa: E731
    if kind == "channels_last":
        cl = x.contiguous(memory_format=torch.channels_last)
        return Case(f"{name} channels-last input", lambda: maps(door, name, model, cl), model, plain, atol=1e-5)
    if kind == "empty":
        return Case(f"{name} empty batch", lambda: maps(door, name, model, x[:0]), model, shape=(0, 8, 8))
    if kind in ("no_grad", "inference_mode"):
        context = torch.no_grad if kind == "no_grad" else torch.inference_mode

        def forward(m: nn.Module, inputs: Tensor) -> Any:
            with context():
                return m(inputs)

        run = lambda: maps(door, name, model, x, forward=forward)  # noqa: E731
        if _needs_graph(name):
            return Case(f"{name} forward under {kind}", run, model, error="grad")
        return Case(f"{name} forward under {kind}", run, model, plain)
    dtype = torch.float16 if kind == "half" else torch.bfloat16
    low = twin(model).to(dtype)
    return Case(f"{name} {kind} model and input on CPU", lambda: maps(door, name, low, x.to(dtype)), low)


def scores_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """``scores`` of the TorchCAM door: another forward's, missing, unbatched, detached."""
    model, x = small_cnn(), _input(draw)
    kind = draw(st.sampled_from(["other_batch", "missing", "unbatched", "detached"]))
    spec = camkit.get_method(name)

    def run() -> Tensor:
        with torchcam(name, model) as extractor:
            scores = model(x)
            if kind == "other_batch":
                model(x[:1])  # a forward of another batch after the one whose scores are passed
            given = {"missing": None, "unbatched": scores[0], "detached": scores.detach()}.get(kind, scores)
            return extractor([0, 1], given)[0]

    reference = lambda: maps(door, name, model, x, class_idx=[0, 1])  # noqa: E731
    if kind in ("other_batch", "unbatched"):
        return Case(f"{name} scores {kind}", run, model, error="scores")
    if kind == "missing":
        error = "scores" if spec.needs_scores else None
        return Case(f"{name} scores missing", run, model, None if error else reference, error=error)
    return Case(f"{name} scores detached", run, model, reference, error="no_graph" if _needs_graph(name) else None)


def output_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """Models returning tuples, lists, dicts, Hugging Face ``ModelOutput`` objects, strings or scalars."""
    bad = BAD_OUTPUTS if door != "explain" else ("dict_other", "string")  # explain: scalar is a gap
    kind = draw(st.sampled_from(GOOD_OUTPUTS + bad))
    model, x = Wrapped(kind).eval(), _input(draw)
    run = lambda: maps(door, name, model, x, layer="net.3")  # noqa: E731
    if kind in GOOD_OUTPUTS:
        return Case(f"{door} {name} output {kind}", run, model, lambda: maps(door, name, model.net, x))
    return Case(f"{door} {name} output {kind}", run, model, error="scores" if kind == "scalar" else "output")


def batch_size_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """``batch_size``: positive ints (same maps), ``None`` (the native doors' device default) and everything else."""
    value = draw(st.one_of(st.integers(-2, 3), st.sampled_from([True, 1.5, "2", None])))
    model, x = small_cnn(), _input(draw)
    run = lambda: maps(door, name, model, x, batch_size=value)  # noqa: E731
    if (type(value) is int and value >= 1) or (value is None and door != "gradcam"):
        return Case(f"{door} {name} batch_size={value}", run, model, lambda: maps(door, name, model, x), atol=1e-5)
    return Case(f"{door} {name} batch_size={value!r}", run, model, error="batch_size")


def method_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """Method names: spelling variants of registry names, and unknown names."""
    model, x = small_cnn(), _input(draw)
    if draw(st.booleans()):
        spelled = draw(st.sampled_from([name.upper(), name.replace("cam", "-cam"), name.replace("cam", "_CAM")]))
        reference = lambda: _with_method(door, name, model, x)  # noqa: E731
        return Case(f"{door} method {spelled!r}", lambda: _with_method(door, spelled, model, x), model, reference)
    unknown = draw(st.text(alphabet="abcdefgz-_", min_size=1, max_size=8).filter(_unknown))
    return Case(f"{door} method {unknown!r}", lambda: _with_method(door, unknown, model, x), model, error="method")


def _unknown(text: str) -> bool:
    try:
        camkit.get_method(text)
    except ValueError:
        return True
    return False


def _with_method(door: str, spelled: str, model: nn.Module, x: Tensor) -> Tensor:
    if door == "torchcam":
        with camkit.CAMExtractor(model, LAYER, method=spelled, **options(spelled)) as extractor:
            return extractor(0, model(x))[0]
    if door == "gradcam":
        return CAMMethod(model, [LAYER], method=spelled, **options(spelled)).compute(x, [ClassifierOutputTarget(0)])
    result = camkit.explain(model, x, method=spelled, target_layer=LAYER, class_idx=0, **options(spelled))
    return result.maps[camkit.get_method(spelled).name][:, 0]


def targets_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """``targets`` of the pytorch-grad-cam door: lists of every length, out-of-range classes, non-lists."""
    model, x = small_cnn(), _input(draw)
    categories = draw(st.lists(st.integers(-1, CLASSES + 1), max_size=4))
    kind = draw(st.sampled_from(["list", "softmax", "bare", "int", "none"]))

    def make() -> Any:
        if kind == "none":
            return None
        if kind == "int":
            return categories[0] if categories else 0
        made = [(ClassifierOutputSoftmaxTarget if kind == "softmax" else ClassifierOutputTarget)(c) for c in categories]
        return made[0] if kind == "bare" and made else made

    def run() -> Tensor:
        return CAMMethod(model, [LAYER], method=name, **options(name)).compute(x, make())

    valid = all(0 <= c < CLASSES for c in categories) and len(categories) in (1, N)
    if kind == "none":
        top = model(x).argmax(dim=1).tolist()
        return Case(f"{name} targets=None", run, model, lambda: maps(door, name, model, x, class_idx=top))
    if kind in ("list", "softmax") and valid:
        classes = categories * N if len(categories) == 1 else categories
        reference = (lambda: maps(door, name, model, x, class_idx=classes)) if kind == "list" else None
        return Case(f"{name} targets {kind} {categories}", run, model, reference)
    return Case(f"{name} targets {kind} {categories}", run, model, error="targets")


def gradcam_input_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """``input_tensor``: unbatched, not a tensor, channels-last, inference tensors, low precision."""
    model, x = small_cnn(), _input(draw)
    kind = draw(st.sampled_from(["rank2", "rank1", "string", "channels_last", "inference", "half", "bfloat16"]))
    plain = lambda: maps(door, name, model, x)  # noqa: E731
    if kind in ("rank2", "rank1", "string"):
        bad: Any = {"rank2": x[0, 0], "rank1": x[0, 0, 0], "string": "image.png"}[kind]
        return Case(f"{name} input_tensor {kind}", lambda: maps(door, name, model, bad), model, error="input_tensor")
    if kind == "channels_last":
        cl = x.contiguous(memory_format=torch.channels_last)
        return Case(f"{name} channels-last input", lambda: maps(door, name, model, cl), model, plain, atol=1e-5)
    if kind == "inference":
        with torch.inference_mode():
            frozen = x.clone()
        return Case(f"{name} inference-mode input", lambda: maps(door, name, model, frozen), model, plain)
    dtype = torch.float16 if kind == "half" else torch.bfloat16
    low = twin(model).to(dtype)
    return Case(f"{name} {kind} model and input on CPU", lambda: maps(door, name, low, x.to(dtype)), low)


def explain_case(draw: st.DrawFn, door: str, name: str) -> Case:
    """``explain``'s own arguments: ``topk``, unbatched and inference tensors, empty lists, missing files."""
    model, x = small_cnn(), _input(draw)
    kind = draw(st.sampled_from(["topk", "unbatched", "channels_last", "inference", "no_images", "missing_file"]))
    if kind == "topk":
        topk = draw(st.one_of(st.integers(-1, CLASSES + 2), st.sampled_from([True, 1.5, "1", None])))

        def run() -> Tensor:
            result = camkit.explain(model, x, method=name, target_layer=LAYER, topk=topk, **options(name))
            assert result.classes.shape == (N, min(int(topk), CLASSES))
            return result.maps[name][:, 0]

        if type(topk) is int and topk >= 1:
            top = model(x).argmax(dim=1).tolist()
            return Case(f"{name} topk={topk}", run, model, lambda: maps(door, name, model, x, class_idx=top))
        return Case(f"{name} topk={topk!r}", run, model, error="topk")
    if kind == "unbatched":
        one = lambda: maps(door, name, model, x[:1])  # noqa: E731
        return Case(f"{name} unbatched image", lambda: maps(door, name, model, x[0]), model, one, shape=(1, 8, 8))
    if kind == "channels_last":
        cl = x.contiguous(memory_format=torch.channels_last)
        return Case(
            f"{name} channels-last",
            lambda: maps(door, name, model, cl),
            model,
            lambda: maps(door, name, model, x),
            atol=1e-5,
        )
    if kind == "inference":
        assume(name != "fullgrad")  # a gap, see test_bad_inputs.py
        with torch.inference_mode():
            frozen = x.clone()
        return Case(
            f"{name} inference-mode input",
            lambda: maps(door, name, model, frozen),
            model,
            lambda: maps(door, name, model, x),
        )
    if kind == "no_images":
        return Case(f"{name} images=[]", lambda: maps(door, name, model, []), model, error="images")
    missing = f"/nonexistent/{draw(st.text(alphabet='abc', min_size=1, max_size=5))}.png"
    return Case(
        f"{name} missing file",
        lambda: maps(door, name, model, missing),
        model,
        error="images",
        errors=(FileNotFoundError,),
    )


BUILDERS: dict[str, dict[str, Callable[[st.DrawFn, str, str], Case]]] = {
    "torchcam": {
        "class_idx": class_case,
        "layer": layer_case,
        "input": torchcam_input_case,
        "scores": scores_case,
        "output": output_case,
        "batch_size": batch_size_case,
        "method": method_case,
    },
    "gradcam": {
        "targets": targets_case,
        "layer": layer_case,
        "input": gradcam_input_case,
        "output": output_case,
        "batch_size": batch_size_case,
        "method": method_case,
    },
    "explain": {
        "class_idx": class_case,
        "layer": layer_case,
        "explain": explain_case,
        "output": output_case,
        "batch_size": batch_size_case,
        "method": method_case,
    },
}


@st.composite
def cases(draw: st.DrawFn, door: str, kind: str) -> Case:
    """A generated case of one kind of argument for ``door``, on a method of the registry."""
    return BUILDERS[door][kind](draw, door, draw(st.sampled_from(METHODS)))
