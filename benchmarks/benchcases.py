"""What benchmarks/latency.py times and measures: the models, their target layers and the cases.

A case is a label, a group and a setup: ``setup(model_copy, env)`` creates the extractors (outside
any timed region) and returns the call to time. The same definitions serve the timing tables (one
process, cases in alternation) and the memory table (one process per case).
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Call = Callable[[], object]

PLAIN = "plain forward"
FLOOR = "floor"  # lean: no graph before the target layer, gradient of the score w.r.t. its output
FLOOR_FULL = "floor (full graph)"  # grad-mode forward (graph of every layer), gradient w.r.t. the layer only
FLOOR_COPY = "floor (second model copy)"  # the floor again on another copy: how far two identical cases differ
INFERENCE = "forward (inference_mode)"
REFERENCE = "reference"
OURS = "camkit"  # camkit's TorchCAM-style rows
OURS_LEAN = "camkit (lean)"  # camkit's TorchCAM-style rows with the forward in `with extractor.lean():`
OURS_GC = "camkit (grad-cam-style)"
COMPARE = "camkit.compare"
COMPARE_METHODS = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcamelementwise")
COMPARE_LABEL = f"camkit.compare ({len(COMPARE_METHODS)} gradient methods)"


# -- models ----------------------------------------------------------------------------------------
def _resnet18() -> nn.Module:
    from torchvision.models import resnet18  # type: ignore[import-untyped]

    model: nn.Module = resnet18(weights=None)
    return model


def _mobilenet_v2() -> nn.Module:
    from torchvision.models import mobilenet_v2

    model: nn.Module = mobilenet_v2(weights=None)
    return model


def _efficientnet_lite0() -> nn.Module:
    from camkit.models import load_default

    return load_default().model


def _deit_tiny() -> nn.Module:
    import timm

    model: nn.Module = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    return model


def vit_tokens_to_grid(tokens: Tensor) -> Tensor:
    """pytorch-grad-cam's ViT reshape: drop the class token, (N, 196, C) -> (N, C, 14, 14)."""
    grid = tokens[:, 1:, :]
    side = int(grid.shape[1] ** 0.5)
    return grid.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark and the layer the CAMs explain.

    ``layer`` is what the TorchCAM-style extractors, ``compare`` and the floors hook (a dotted
    name); ``gradcam_layer`` the module pytorch-grad-cam's convention passes in ``target_layers``.
    ``peer_reshape`` is the ``reshape_transform`` pytorch-grad-cam needs (camkit reads token
    outputs as grids by itself); ``torchcam`` says whether TorchCAM can explain the layer (it
    cannot read transformer tokens); ``skip`` maps the pytorch-grad-cam-style methods left out to
    the reason.
    """

    name: str
    build: Callable[[], nn.Module]
    layer: str
    gradcam_layer: str
    title: str = ""
    input_shape: tuple[int, ...] = (3, 224, 224)
    num_classes: int = 1000
    peer_reshape: Callable[[Tensor], Tensor] | None = None
    torchcam: bool = True
    skip: dict[str, str] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    "resnet18": ModelSpec("resnet18", _resnet18, "layer4", "layer4.1", "resnet18 (random weights)"),
    "mobilenet_v2": ModelSpec(
        "mobilenet_v2", _mobilenet_v2, "features.18", "features.18", "mobilenet_v2 (random weights)"
    ),
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0",
        _efficientnet_lite0,
        "bn2",
        "bn2",
        "EfficientNet-Lite0 (ImageNet weights)",
        skip={
            "FullGrad": "pytorch-grad-cam's FullGrad keeps only layers whose type is exactly Conv2d or BatchNorm2d, "
            "so it drops timm's BatchNormAct2d (all 49 bias layers of this model) and computes the input term "
            "alone; camkit computes all 50 terms: not the same work"
        },
    ),
    "deit_tiny": ModelSpec(
        "deit_tiny",
        _deit_tiny,
        "blocks.11.norm1",
        "blocks.11.norm1",
        "ViT: timm deit_tiny_patch16_224 (random weights)",
        peer_reshape=vit_tokens_to_grid,
        torchcam=False,
        skip={"FullGrad": "both libraries' FullGrad read convolution/BatchNorm biases; this ViT has none"},
    ),
}


# -- what a setup may use ----------------------------------------------------------------------------
@dataclass
class Env:
    """The input, the classes to explain and the model spec of one table."""

    spec: ModelSpec
    x: Tensor
    class_idx: list[int]

    @property
    def rows(self) -> Tensor:
        """The class indices as a ``(B, 1)`` index tensor on the input's device."""
        return torch.tensor(self.class_idx, device=self.x.device).view(-1, 1)


Setup = Callable[[nn.Module, Env], Call]


@dataclass(frozen=True)
class Case:
    """One row: a label, its group, its setup; ``peer`` is the label it is compared with.

    ``kind`` names the goal it counts for (``"gradient"``, ``"eigencam"``, ``"ablation"``,
    ``"scorecam"``, ``"compare"``, ``""``); ``rivals``: labels it must not be slower than the
    fastest of; ``settle``: its library leaves worker threads spinning after a call (pause after its
    samples).
    """

    label: str
    group: str
    setup: Setup
    peer: str | None = None
    kind: str = ""
    rivals: tuple[str, ...] = ()
    settle: bool = False


def make_env(spec: ModelSpec, batch: int, device: torch.device) -> Env:
    """The seeded input and classes of a table (the same in every process)."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand((batch, *spec.input_shape), generator=gen).to(device)
    classes = torch.randint(spec.num_classes, (batch,), generator=gen).tolist()
    return Env(spec, x, classes)


def build_model(spec: ModelSpec, device: torch.device) -> nn.Module:
    """The model in eval mode, with the same weights in every process."""
    torch.manual_seed(0)
    return spec.build().eval().to(device)


# -- references ---------------------------------------------------------------------------------------
def inference_forward(model: nn.Module, env: Env) -> Call:
    def call() -> object:
        with torch.inference_mode():
            return model(env.x)

    return call


def plain_forward(model: nn.Module, env: Env) -> Call:
    def call() -> object:
        return model(env.x)

    return call


def floor_full(model: nn.Module, env: Env) -> Call:
    """Grad-mode forward with a hook keeping the layer's output, then the gradient w.r.t. it only."""
    kept: list[Tensor] = []
    layer = model.get_submodule(env.spec.layer)
    layer.register_forward_hook(lambda _m, _i, out: kept.append(out))  # stays for the model copy's life
    rows = env.rows

    def call() -> object:
        kept.clear()
        score = model(env.x).gather(1, rows).sum()
        return torch.autograd.grad(score, kept[0])

    return call


def floor_lean(model: nn.Module, env: Env) -> Call:
    """No graph before the target layer: grad off for the forward, turned on by a hook at the layer.

    The hook returns the layer's output detached as a fresh leaf that requires grad and turns grad
    mode on, so only the layers after it are recorded; the gradient of the score w.r.t. that leaf
    is the gradient w.r.t. the layer's output. Grad mode is restored after the forward.
    """
    kept: list[Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> Tensor:
        torch.set_grad_enabled(True)
        leaf = out.detach().requires_grad_()
        kept.append(leaf)
        return leaf

    model.get_submodule(env.spec.layer).register_forward_hook(hook)
    rows = env.rows

    def call() -> object:
        kept.clear()
        before = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            score = model(env.x).gather(1, rows).sum()
        finally:
            torch.set_grad_enabled(before)
        return torch.autograd.grad(score, kept[0])

    return call


# -- libraries ----------------------------------------------------------------------------------------
TORCHCAM_STYLE = {OURS: "camkit.methods", "torchcam": "torchcam.methods"}
GRADCAM_STYLE = {
    OURS_GC: ("camkit.compat.gradcam", "camkit.compat.gradcam.utils.model_targets"),
    "pytorch-grad-cam": ("pytorch_grad_cam", "pytorch_grad_cam.utils.model_targets"),
}
PEER_GC = "pytorch-grad-cam"


def extractor_case(library: str, method: str, lean: bool = False, **options: Any) -> Setup:
    """TorchCAM-style: ``scores = model(x); cams = extractor(class_idx, scores)`` (optionally lean)."""

    def setup(model: nn.Module, env: Env) -> Call:
        cls = getattr(importlib.import_module(TORCHCAM_STYLE[library]), method)
        extractor = cls(model, env.spec.layer, **options)  # hooks stay on this model copy until the process ends

        def call() -> object:
            with extractor.lean() if lean else contextlib.nullcontext():
                scores = model(env.x)
            return extractor(env.class_idx, scores)

        return call

    return setup


def gradcam_case(library: str, class_name: str, **options: Any) -> Setup:
    """pytorch-grad-cam style: ``cam(input_tensor=x, targets=[ClassifierOutputTarget(c), ...])``."""

    def setup(model: nn.Module, env: Env) -> Call:
        module, targets_module = GRADCAM_STYLE[library]
        cls = getattr(importlib.import_module(module), class_name)
        target = importlib.import_module(targets_module).ClassifierOutputTarget
        layer = model.get_submodule(env.spec.gradcam_layer)
        extra = dict(options)
        if library == PEER_GC and env.spec.peer_reshape is not None:
            extra["reshape_transform"] = env.spec.peer_reshape
        with contextlib.redirect_stdout(io.StringIO()):  # pytorch-grad-cam's FullGrad prints a warning here
            cam = cls(model=model, target_layers=[layer], **extra)  # its hooks stay on this model copy

        def call() -> object:
            return cam(input_tensor=env.x, targets=[target(c) for c in env.class_idx])

        return call

    return setup


def compare_case(model: nn.Module, env: Env) -> Call:
    """``camkit.compare`` of the six gradient methods from one forward and one backward."""
    import camkit

    def call() -> object:
        return camkit.compare(model, env.x, list(COMPARE_METHODS), env.spec.layer, class_idx=env.class_idx)

    return call


def has(module: str, name: str) -> bool:
    """Whether ``module`` (importable) has ``name``."""
    try:
        return hasattr(importlib.import_module(module), name)
    except (ImportError, NotImplementedError):
        return False


def has_compare() -> bool:
    """Whether this camkit has ``camkit.compare`` (landed with the lean capture path)."""
    return has("camkit", "compare")


def has_lean() -> bool:
    """Whether camkit's TorchCAM-style extractors offer ``with extractor.lean():``."""
    from camkit.engine import CAMExtractor

    return hasattr(CAMExtractor, "lean")


def gc_methods(names: Sequence[str], spec: ModelSpec | None = None, check: bool = True) -> tuple[list[str], list[str]]:
    """The methods of ``names`` both pytorch-grad-cam-style libraries have (minus the spec's skips), and the rest.

    ``check=False`` trusts that both have them (a memory child imports only its own case's library).
    """
    skip = spec.skip if spec is not None else {}
    if check:
        from camkit.compat.gradcam import available

        ours = set(available())
        have = [m for m in names if m in ours and m not in skip and has("pytorch_grad_cam", m)]
    else:
        have = [m for m in names if m not in skip]
    return have, [m for m in names if m not in have]


def gc_pair(method: str, kind: str, **options: Any) -> list[Case]:
    """camkit's front door and pytorch-grad-cam's class of ``method``."""
    mine, theirs = f"camkit {method} (grad-cam-style)", f"pytorch-grad-cam {method}"
    return [
        Case(mine, OURS_GC, gradcam_case(OURS_GC, method, **options), peer=theirs, kind=kind),
        Case(theirs, PEER_GC, gradcam_case(PEER_GC, method, **options), settle=True),
    ]


def reference_cases() -> list[Case]:
    return [
        Case(INFERENCE, REFERENCE, inference_forward),
        Case(PLAIN, REFERENCE, plain_forward),
        Case(FLOOR, REFERENCE, floor_lean),
        Case(FLOOR_FULL, REFERENCE, floor_full),
        Case(FLOOR_COPY, REFERENCE, floor_lean),
    ]


def torchcam_style_cases(spec: ModelSpec, methods: Sequence[str]) -> list[Case]:
    """camkit (default, and lean when available) and TorchCAM (when it can read the layer) per method."""
    cases: list[Case] = []
    for m in methods:
        peer = f"torchcam {m}" if spec.torchcam and has("torchcam.methods", m) else None
        cases.append(
            Case(f"camkit {m} (torchcam-style)", OURS, extractor_case(OURS, m), peer=peer, kind="torchcam-style")
        )
        if has_lean():
            label = f"camkit {m} (torchcam-style, lean)"
            cases.append(Case(label, OURS_LEAN, extractor_case(OURS, m, lean=True), peer=peer, kind="lean"))
        if peer is not None:
            cases.append(Case(peer, "torchcam", extractor_case("torchcam", m)))
    return cases


def gradient_cases(
    spec: ModelSpec, torchcam_methods: Sequence[str], gc_names: Sequence[str], eigen: bool = True
) -> list[Case]:
    """The gradient table: references, TorchCAM-style rows, grad-cam-style pairs, EigenCAM, compare."""
    cases = reference_cases() + torchcam_style_cases(spec, torchcam_methods)
    for m in gc_methods(gc_names, spec)[0]:
        cases += gc_pair(m, "gradient")
    if eigen and gc_methods(["EigenCAM"], spec)[0]:
        cases += gc_pair("EigenCAM", "eigencam")
    if has_compare():
        cases.append(Case(COMPARE_LABEL, COMPARE, compare_case, kind="compare"))
    return cases


def memory_cases(spec: ModelSpec, method: str = "GradCAM", check: bool = True) -> list[Case]:
    """The memory table: references, then ``method`` in every library and front door, then compare."""
    cases = [c for c in reference_cases() if c.label != FLOOR_COPY] + torchcam_style_cases(spec, [method])
    if gc_methods([method], spec, check)[0]:
        cases += gc_pair(method, "gradient")
    if has_compare():
        cases.append(Case(COMPARE_LABEL, COMPARE, compare_case, kind="compare"))
    return cases


def perturbation_cases(ablation_batch_sizes: Sequence[int]) -> list[Case]:
    """References and AblationCAM: camkit's front door at ``batch_size`` 32 and more, the peer at 32."""
    cases = [Case(INFERENCE, REFERENCE, inference_forward), Case(PLAIN, REFERENCE, plain_forward)]
    peer_ablation = "pytorch-grad-cam AblationCAM (batch_size 32)"
    if gc_methods(["AblationCAM"])[0]:
        for bs in dict.fromkeys([32, *ablation_batch_sizes]):  # 32 = both libraries' default, first
            cases.append(
                Case(
                    f"camkit AblationCAM (grad-cam-style, batch_size {bs})",
                    OURS_GC,
                    gradcam_case(OURS_GC, "AblationCAM", batch_size=bs),
                    peer=peer_ablation,
                    kind="ablation" if bs == 32 else "ablation-variant",
                )
            )
        cases.append(Case(peer_ablation, PEER_GC, gradcam_case(PEER_GC, "AblationCAM", batch_size=32), settle=True))
    return cases


def score_cases(budget: int | None) -> list[Case]:
    """References and ScoreCAM in three libraries (and camkit with a channel budget).

    camkit's front door (its ``batch_size`` 32) against pytorch-grad-cam's (16 masked inputs per
    forward, fixed); camkit's TorchCAM-style class against TorchCAM's (both ``batch_size`` 32); with
    ``budget``, camkit's front door at ``max_channels=budget`` against its own full run.
    """
    cases = [Case(INFERENCE, REFERENCE, inference_forward), Case(PLAIN, REFERENCE, plain_forward)]
    if not gc_methods(["ScoreCAM"])[0]:
        return cases
    mine = "camkit ScoreCAM (grad-cam-style, batch_size 32)"
    peer_score = "pytorch-grad-cam ScoreCAM (16 per forward, fixed)"
    torchcam_score = "torchcam ScoreCAM (batch_size 32)"
    rivals = (peer_score, torchcam_score) if has("torchcam.methods", "ScoreCAM") else (peer_score,)
    cases.append(
        Case(mine, OURS_GC, gradcam_case(OURS_GC, "ScoreCAM"), peer=peer_score, kind="scorecam", rivals=rivals)
    )
    cases.append(Case(peer_score, PEER_GC, gradcam_case(PEER_GC, "ScoreCAM"), settle=True))
    if len(rivals) > 1:
        label = "camkit ScoreCAM (torchcam-style, batch_size 32)"
        cases.append(Case(label, OURS, extractor_case(OURS, "ScoreCAM", batch_size=32), peer=torchcam_score))
        cases.append(Case(torchcam_score, "torchcam", extractor_case("torchcam", "ScoreCAM", batch_size=32)))
    if budget is not None:
        cases.append(
            Case(
                f"camkit ScoreCAM (grad-cam-style, batch_size 32, max_channels={budget})",
                OURS_GC,
                gradcam_case(OURS_GC, "CAMMethod", method="scorecam", max_channels=budget),
                peer=mine,
                kind="scorecam-budget",
            )
        )
    return cases
