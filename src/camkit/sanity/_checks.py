"""The two checks: model-parameter randomisation (Adebayo et al. 2018) and random logit (Sixt et al. 2020)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from camkit import ops
from camkit.engine import LayerSpec, ModelInput, Progress, eval_mode, module_calls, resolve_layers
from camkit.models import LoadedModel
from camkit.passes import run_methods
from camkit.registry import get_method, list_methods
from camkit.sanity._similarity import MEASURES

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "BASELINES",
    "DEFAULT_THRESHOLD",
    "MODES",
    "Explainer",
    "ModelRandomization",
    "RandomLogit",
    "edges",
    "model_randomization",
    "parameter_layers",
    "random_logit",
]

#: an explainer that is not a registry method: ``(model, x, classes (N,)) -> maps (N, H, W)``
Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]

#: the randomisation modes
MODES = ("cascading", "independent")

#: a method passes when its similarity (see :attr:`ModelRandomization.passed`) is below this
DEFAULT_THRESHOLD = 0.5


def edges(model: nn.Module, x: Tensor, classes: Tensor) -> Tensor:
    """A baseline that ignores the model: the Sobel edge magnitude of the input's channel mean.

    Adebayo et al. (2018) show that an edge detector looks like a saliency map; a check that
    cannot tell a method from this one says nothing about the method. Its map is the same for any
    model and class, so its similarity stays 1 under every randomisation: it fails both checks.

    Args:
        model: not read.
        x: the input ``(N, C, H, W)``.
        classes: not read.

    Returns:
        ``(N, H, W)`` maps in ``[0, 1]``.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8); x[..., 4:] = 1
        >>> edges(nn.Identity(), x, torch.zeros(1))[0, 0].tolist()
        [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    del model, classes
    gray = x.detach().float().mean(dim=1, keepdim=True)
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device)
    kernels = torch.stack([sobel, sobel.t()]).unsqueeze(1)
    gradient = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return ops.normalize(gradient.norm(dim=1))


#: baseline explainers that may be passed by name as ``method``
BASELINES: dict[str, Explainer] = {"edges": edges}


@dataclass(frozen=True)
class _Method:
    name: str
    explainer: Explainer | None  # None: a registry method


def _methods(method: str | Explainer | Sequence[str | Explainer]) -> list[_Method]:
    given = [method] if isinstance(method, str) or callable(method) else list(method)
    if not given:
        raise ValueError("method is empty: pass a registry name (camkit.list_methods()), 'edges', or a list of them")
    found: list[_Method] = []
    for item in given:
        if isinstance(item, str):
            if item.lower() in BASELINES:
                found.append(_Method(item.lower(), BASELINES[item.lower()]))
                continue
            try:
                found.append(_Method(get_method(item).name, None))
            except ValueError as error:
                raise ValueError(f"{error}; or a baseline: {', '.join(BASELINES)}") from None
        elif callable(item):
            found.append(_Method(getattr(item, "__name__", type(item).__name__), item))
        else:
            raise TypeError(f"method must be a method name or a callable (model, x, classes) -> maps, got {item!r}")
    names = [m.name for m in found]
    if len(set(names)) != len(names):
        raise ValueError(f"method names a method twice: {names}")
    return found


def _check_measures(similarity: str | Sequence[str]) -> list[str]:
    measures = [similarity] if isinstance(similarity, str) else list(similarity)
    unknown = [m for m in measures if m not in MEASURES]
    if not measures or unknown:
        raise ValueError(f"similarity must name one or more of {', '.join(MEASURES)}, got {similarity!r}")
    return measures


def _owned(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _call_order(model: nn.Module, x: Tensor) -> list[str]:
    """The modules that own parameters, in the order of their first call in a forward of ``x``."""
    owners = [name for name, module in model.named_modules() if _owned(module)]
    with module_calls(model, owners, before=True, keep=lambda _args: None) as calls, torch.no_grad():
        model(x[:1])
    return list(dict.fromkeys(name for name, _ in calls))


def parameter_layers(model: nn.Module, x: Tensor, depth: int | None = 2) -> list[tuple[str, list[str]]]:
    """The randomisation steps: groups of modules with parameters, in reverse forward order.

    The modules that own parameters are grouped by the first ``depth`` parts of their dotted names
    (``blocks.6.0.conv_pw`` → ``blocks.6`` at depth 2; ``None``: each module alone) and the groups
    are ordered by the first call of their first module, last first (the top of the network
    first). A module that the forward of ``x`` does not call is left out (it cannot change a map).
    The forward runs in eval mode, without gradients, on the model given (call it on a copy).

    Args:
        model: the model.
        x: an input (its first sample is used).
        depth: how many name parts make a group; ``None``: one step per module.

    Returns:
        ``(group name, its module names)`` per step, top first.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        >>> [name for name, _ in parameter_layers(net, torch.rand(1, 3, 8, 8))]
        ['3', '0']
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be a positive int or None, got {depth!r}")
    training = model.training
    model.eval()
    try:
        called = _call_order(model, x)
    finally:
        model.train(training)
    groups: dict[str, list[str]] = {}
    for name in called:
        key = name if depth is None else ".".join(name.split(".")[:depth])
        groups.setdefault(key, []).append(name)
    return list(reversed(groups.items()))


def _truncated_normal(shape: torch.Size, std: float, generator: torch.Generator) -> Tensor:
    """Draws of a normal distribution of mean 0 and ``std``, truncated at two standard deviations."""
    low, high = 0.5 * (1 + math.erf(-2 / math.sqrt(2))), 0.5 * (1 + math.erf(2 / math.sqrt(2)))
    uniform = low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    return (math.sqrt(2) * torch.erfinv(2 * uniform - 1) * std).float()


@torch.no_grad()
def _randomize(parameters: Sequence[nn.Parameter], generator: torch.Generator) -> None:
    for p in parameters:
        std = float(p.detach().double().std()) if p.numel() > 1 else float(p.detach().double().abs().sum())
        if not math.isfinite(std) or std == 0:
            std = 0.01
        p.copy_(_truncated_normal(p.shape, std, generator).to(p.dtype))


@dataclass(frozen=True)
class _Step:
    name: str
    parameters: list[nn.Parameter]


def _steps(net: nn.Module, x: Tensor, layers: Sequence[str] | int | None) -> list[_Step]:
    if layers is None or isinstance(layers, int):
        groups = parameter_layers(net, x, 2 if layers is None else layers)
        found = [
            _Step(name or "(model)", [p for module in modules for p in net.get_submodule(module).parameters(False)])
            for name, modules in groups
        ]
    else:
        if isinstance(layers, str) or not layers:
            raise ValueError(
                f"layers must be a list of module names, an int (a grouping depth) or None, got {layers!r}"
            )
        found = []
        for name in layers:
            try:
                module = net.get_submodule(name)
            except AttributeError:
                raise ValueError(f"layers: the model has no module {name!r} (see `camkit layers --all`)") from None
            found.append(_Step(name, list(module.parameters())))
    found = [step for step in found if step.parameters]
    if not found:
        raise ValueError("the model has no parameters to randomise")
    return found


def _device_of(model: nn.Module) -> torch.device:
    ref = next(iter(model.parameters()), None)
    return ref.device if ref is not None else torch.device("cpu")


@dataclass
class _Setup:
    net: nn.Module
    x: Tensor
    methods: list[_Method]
    layer_of: Callable[[str], LayerSpec]
    options: dict[str, Any]
    batch_size: int | str | None


def _setup(
    model: nn.Module | LoadedModel,
    x: Tensor,
    method: str | Explainer | Sequence[str | Explainer],
    target_layer: LayerSpec,
    batch_size: int | str | None,
    options: dict[str, Any],
) -> _Setup:
    net = model.model if isinstance(model, LoadedModel) else model
    if not isinstance(net, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a LoadedModel, got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be an image batch (N, C, H, W), got {shape}")
    methods = _methods(method)
    default = target_layer
    if default is None and isinstance(model, LoadedModel):
        default = model.target_layer
    x = x.detach().to(_device_of(net))
    resolved = resolve_layers(net, default, tuple(x.shape[1:])) if any(not m.explainer for m in methods) else []

    def layer_of(name: str) -> LayerSpec:
        return target_layer if get_method(name).layers is not None else resolved

    return _Setup(net, x, methods, layer_of, options, batch_size)


def _maps(setup: _Setup, net: nn.Module, choose: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Every method's maps for the classes ``choose`` picks: ``(N, K, M, H, W)``, and the classes ``(N, K)``.

    The registry methods that share a capture run from one forward (:func:`camkit.passes.run_methods`).
    """
    registry = [m.name for m in setup.methods if m.explainer is None]
    size = tuple(setup.x.shape[2:])
    found: dict[str, Tensor] = {}
    if registry:
        _, classes, maps, _ = run_methods(
            net,
            ModelInput.of(setup.x),
            registry,
            setup.layer_of,
            choose,
            batch_size=setup.batch_size,
            size=size,
            switches={"progress": False},
            where="model_randomization",
            keywords=("target_layer", "class_idx", "batch_size", "similarity", "mode", "layers", "generator"),
            **setup.options,
        )
        found.update(maps)
    else:
        with torch.no_grad(), eval_mode(net):
            classes = choose(net(setup.x).detach().float().softmax(dim=1))
    for m in setup.methods:
        if m.explainer is not None:
            per_class = []
            for k in range(classes.shape[1]):
                cam = m.explainer(net, setup.x, classes[:, k]).detach()
                if tuple(cam.shape[-2:]) != size:
                    cam = ops.upsample(cam, size)
                per_class.append(ops.normalize(cam.float()))
            found[m.name] = torch.stack(per_class, dim=1)
    stacked = torch.stack([found[m.name].detach().float() for m in setup.methods], dim=2)
    return torch.nan_to_num(stacked).cpu(), classes.cpu()


def _fixed(classes: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda probabilities: classes.to(probabilities.device).view(-1, 1)


def _chosen(class_idx: int | Sequence[int] | Tensor | None, n: int) -> Callable[[Tensor], Tensor]:
    def choose(probabilities: Tensor) -> Tensor:
        if class_idx is None:
            return probabilities.argmax(dim=1, keepdim=True)
        given = torch.as_tensor(class_idx, dtype=torch.long).reshape(-1)
        if given.numel() == 1:
            given = given.expand(n)
        count = probabilities.shape[1]
        if given.numel() != n or bool(((given < 0) | (given >= count)).any()):
            raise ValueError(f"class_idx must be one class in 0..{count - 1} or one per image ({n}), got {class_idx!r}")
        return given.to(probabilities.device).view(-1, 1)

    return choose


def _similarities(maps: Tensor, reference: Tensor, measures: Sequence[str]) -> dict[str, Tensor]:
    """Per measure, the similarity of ``maps (..., N, M, H, W)`` to ``reference (N, M, H, W)``: ``(..., N, M)``."""
    expanded = reference.expand_as(maps)
    return {measure: MEASURES[measure](maps, expanded).float() for measure in measures}


def below(scores: Mapping[str, float], threshold: float) -> bool:
    """The pass rule: every measure's magnitude is below ``threshold``.

    A strong negative correlation means the map still follows the other one, inverted.
    """
    return all(abs(value) < threshold for value in scores.values())


def _table(rows: Mapping[str, Mapping[str, float]], passed: Mapping[str, bool], measures: Sequence[str]) -> str:
    width = max(len("method"), *(len(name) for name in rows))
    lines = [f"{'method':<{width}}  " + "  ".join(f"{m:>11}" for m in measures) + "  result"]
    for name, values in rows.items():
        cells = "  ".join(f"{values[m]:>11.3f}" for m in measures)
        lines.append(f"{name:<{width}}  {cells}  {'pass' if passed[name] else 'FAIL'}")
    return "\n".join(lines)


@dataclass(frozen=True, repr=False)
class ModelRandomization:
    """The result of :func:`model_randomization`.

    Attributes:
        mode: ``"cascading"`` or ``"independent"``.
        methods: the method names, in the order of the last dimension of :attr:`similarity`.
        layers: the randomised layers (module or group names), in the order randomised (top first).
        classes: the explained class per image ``(N,)``, the trained model's (fixed over the steps).
        similarity: measure → ``(layers, N, methods)`` similarity of each step's map to the trained
            model's map (float32, CPU).
        maps: ``(1 + layers, N, methods, H, W)`` maps in ``[0, 1]``: the trained model's, then each
            step's (only the trained model's, ``(1, N, methods, H, W)``, with ``keep_maps=False``).
        threshold: the pass threshold (see :attr:`passed`).
        images: the input ``(N, C, H, W)`` (CPU), for :meth:`figure`.
    """

    mode: str
    methods: list[str]
    layers: list[str]
    classes: Tensor
    similarity: dict[str, Tensor]
    maps: Tensor
    threshold: float
    images: Tensor = field(compare=False)

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """Method → measure → the similarity the pass rule reads, averaged over the images.

        Cascading: at the last step (every layer randomised). Independent: at the step where it is
        closest to 0 (the layer whose randomisation changes the map most, by this measure).
        """
        result: dict[str, dict[str, float]] = {}
        for j, name in enumerate(self.methods):
            result[name] = {}
            for measure, values in self.similarity.items():
                mean = values[..., j].double().mean(dim=1)  # over the images: (layers,)
                step = -1 if self.mode == "cascading" else int(mean.abs().argmin())
                result[name][measure] = float(mean[step])
        return result

    @property
    def passed(self) -> dict[str, bool]:
        """Method → whether the maps depend on the parameters: ``|similarity| < threshold`` for every measure.

        Cascading (Adebayo et al.'s test): the maps of the fully randomised model must be unlike
        the trained model's by every measure: ``|similarity| < threshold``. Independent:
        randomising some single layer must make them unlike.
        """
        return {name: below(values, self.threshold) for name, values in self.scores.items()}

    def curve(self, method: str, measure: str = "spearman") -> Tensor:
        """The similarity per step, averaged over the images: ``(layers,)``."""
        return self.similarity[measure][..., self.methods.index(method)].mean(dim=1)

    def table(self) -> str:
        """The methods' :attr:`scores` and verdicts as a text table."""
        return _table(self.scores, self.passed, list(self.similarity))

    def figure(self, sample: int = 0, columns: int = 8, cell_size: int = 112) -> Image.Image:
        """Similarity against the randomised layers (one chart per measure), and the maps of one image in a strip.

        Args:
            sample: which image's maps to show.
            columns: at most this many randomisation steps are shown (evenly spaced, the last always).
            cell_size: pixels per map.
        """
        from camkit.sanity._figure import randomization_figure

        return randomization_figure(self, sample, columns, cell_size)

    def __repr__(self) -> str:
        rule = "last step" if self.mode == "cascading" else "step closest to 0"
        head = (
            f"ModelRandomization({self.mode}, {len(self.layers)} layers, {self.images.shape[0]} image(s); "
            f"similarity to the trained model's maps at the {rule}, mean over images; pass: < {self.threshold:g})"
        )
        return f"{head}\n{self.table()}"


def model_randomization(
    model: nn.Module | LoadedModel,
    x: Tensor,
    method: str | Explainer | Sequence[str | Explainer] = "gradcam",
    target_layer: LayerSpec = None,
    class_idx: int | Sequence[int] | Tensor | None = None,
    *,
    mode: str = "cascading",
    similarity: str | Sequence[str] = ("spearman", "ssim", "hog_pearson"),
    layers: Sequence[str] | int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    generator: torch.Generator | None = None,
    batch_size: int | str | None = None,
    progress: bool | None = None,
    keep_maps: bool = True,
    **options: Any,
) -> ModelRandomization:
    r"""The model-parameter randomisation test (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018).

    A map that explains the model must change when the model's learned parameters are replaced by
    random ones. The layers are randomised from the top (the output) down, on a COPY of the model
    (the model given, its parameters, buffers, flags and hooks are never changed, also when the
    check stops on an error or ``KeyboardInterrupt``; the copy keeps the model's hooks, so they
    run on it too): ``"cascading"`` keeps the earlier steps'
    randomisations (after the last step the whole network is random), ``"independent"``
    randomises one layer at a time, the others trained. After each step every method's map of the
    same class (the trained model's choice) is compared with its map from the trained model.

    Each parameter tensor is replaced by draws of a normal distribution of mean 0 and the
    tensor's own standard deviation, truncated at :math:`\pm 2\sigma` (Adebayo et al. re-initialise
    with a truncated normal); buffers (BatchNorm statistics) are kept.

    Cost: one forward (and one backward) per step for all registry methods that read only the
    target layer (one shared pass, :mod:`camkit.passes`); methods with their own pass add theirs.

    Args:
        model: the model (or a :class:`~camkit.models.LoadedModel`: its default layer).
        x: the preprocessed input ``(N, C, H, W)``.
        method: a registry name (:func:`camkit.list_methods`), ``"edges"`` (:func:`edges`, a
            baseline that ignores the model), a callable ``(model, x, classes) -> (N, H, W)``, or a
            list of them.
        target_layer: the methods' target layer(s) (default: the loaded model's, else camkit's choice).
        class_idx: the class to explain (one, or one per image); default: each image's top class.
        mode: ``"cascading"`` or ``"independent"``.
        similarity: the measures (:data:`camkit.sanity.MEASURES`): ``"spearman"``, ``"ssim"``, ``"hog_pearson"``.
        layers: the steps: module names (each randomises every parameter under it, in the order
            given), or the depth at which modules with parameters are grouped
            (:func:`parameter_layers`; default 2: ``blocks.6`` in an EfficientNet, ``layer4.1`` in
            a ResNet).
        threshold: the pass threshold (see :attr:`ModelRandomization.passed`).
        generator: the random draws (default: seeded with 0, so the check is repeatable).
        batch_size: inputs per forward for methods that re-run the model (``None``: 8 on a CPU, 32 on a GPU).
        progress: a progress line over the steps (default: for long runs on a terminal).
        keep_maps: keep every step's maps (for :meth:`ModelRandomization.figure`); ``False`` keeps
            only the trained model's (the similarities are computed step by step either way).
        **options: method options (each method gets those it declares).

    Returns:
        A :class:`ModelRandomization` (``.similarity``, ``.passed``, ``.figure()``).

    Raises:
        ValueError: for an unknown method, mode, measure or layer, or a bad ``class_idx``.
        TypeError: for a bad ``model``, a model that ``copy.deepcopy`` cannot copy, or an unknown option.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
        >>> result = model_randomization(net, torch.rand(1, 3, 32, 32), ["gradcam", "edges"], "3", 0)
        >>> result.layers, result.similarity["spearman"].shape  # layers x images x methods
        (['6', '2', '0'], torch.Size([3, 1, 2]))
        >>> result.passed["edges"]
        False
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    measures = _check_measures(similarity)
    setup = _setup(model, x, method, target_layer, batch_size, options)
    draws = generator if generator is not None else torch.Generator().manual_seed(0)
    try:
        net = copy.deepcopy(setup.net)  # every change happens on this copy, which is dropped on any exit
    except Exception as error:  # a model that cannot be copied: say why, before anything ran
        raise TypeError(
            f"model_randomization randomises a copy of the model (copy.deepcopy), which failed: {error}"
        ) from error
    steps = _steps(net, setup.x, layers)
    original, classes = _maps(setup, net, _chosen(class_idx, setup.x.shape[0]))
    reference = original[:, 0]  # (N, M, H, W)
    fixed = _fixed(classes[:, 0])
    kept, found = [reference], []
    bar = Progress(len(steps), "layers", enabled=progress)
    try:
        for _ in _walk(steps, mode, draws):
            step_maps = _maps(setup, net, fixed)[0][:, 0]
            found.append(_similarities(step_maps, reference, measures))
            if keep_maps:
                kept.append(step_maps)
            bar.update(1)
    finally:
        bar.close()
    del net
    return ModelRandomization(
        mode,
        [m.name for m in setup.methods],
        [step.name for step in steps],
        classes[:, 0],
        {measure: torch.stack([values[measure] for values in found]) for measure in measures},
        torch.stack(kept),
        float(threshold),
        setup.x.detach().cpu(),
    )


def _walk(steps: Sequence[_Step], mode: str, generator: torch.Generator) -> Iterator[_Step]:
    """Randomise step after step (independent: each step's parameters are put back after it)."""
    for step in steps:
        kept = [p.detach().clone() for p in step.parameters] if mode == "independent" else []
        _randomize(step.parameters, generator)
        yield step
        if kept:
            with torch.no_grad():
                for p, value in zip(step.parameters, kept, strict=True):
                    p.copy_(value)


@dataclass(frozen=True, repr=False)
class RandomLogit:
    """The result of :func:`random_logit`.

    Attributes:
        methods: the method names (the last dimension of :attr:`similarity`).
        classes: the explained class per image ``(N,)``.
        others: the random other class per image ``(N,)``.
        similarity: measure → ``(N, methods)`` similarity of the other class's map to the class's map.
        maps: ``(2, N, methods, H, W)``: the class's maps, then the other class's.
        threshold: the pass threshold.
        images: the input ``(N, C, H, W)`` (CPU).
    """

    methods: list[str]
    classes: Tensor
    others: Tensor
    similarity: dict[str, Tensor]
    maps: Tensor
    threshold: float
    images: Tensor = field(compare=False)

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """Method → measure → the similarity averaged over the images."""
        return {
            name: {measure: float(values[:, j].double().mean()) for measure, values in self.similarity.items()}
            for j, name in enumerate(self.methods)
        }

    @property
    def passed(self) -> dict[str, bool]:
        """Method → whether its map depends on the class: ``|similarity| < threshold`` for every measure."""
        return {name: below(values, self.threshold) for name, values in self.scores.items()}

    def table(self) -> str:
        """The methods' :attr:`scores` and verdicts as a text table."""
        return _table(self.scores, self.passed, list(self.similarity))

    def __repr__(self) -> str:
        head = (
            f"RandomLogit({self.images.shape[0]} image(s); similarity of a random other class's map to the "
            f"class's map, mean over images; pass: < {self.threshold:g})"
        )
        return f"{head}\n{self.table()}"


def random_logit(
    model: nn.Module | LoadedModel,
    x: Tensor,
    method: str | Explainer | Sequence[str | Explainer] = "gradcam",
    target_layer: LayerSpec = None,
    class_idx: int | Sequence[int] | Tensor | None = None,
    *,
    similarity: str | Sequence[str] = ("spearman", "ssim", "hog_pearson"),
    threshold: float = DEFAULT_THRESHOLD,
    generator: torch.Generator | None = None,
    batch_size: int | str | None = None,
    **options: Any,
) -> RandomLogit:
    """The random-logit test (Sixt et al., When Explanations Lie, ICML 2020): does the map depend on the class?

    Each image's map of its class is compared with its map of a random other class (drawn
    uniformly from the other classes with ``generator``). A method whose map barely changes shows
    the image, not the model's reasons for the class. Both classes' maps come from one forward and
    two backwards for the methods that share a capture. The model is not changed.

    Args:
        model: the model (or a :class:`~camkit.models.LoadedModel`: its default layer).
        x: the preprocessed input ``(N, C, H, W)``.
        method: as :func:`model_randomization`.
        target_layer: the methods' target layer(s).
        class_idx: the class to explain (one, or one per image); default: each image's top class.
        similarity: the measures.
        threshold: the pass threshold (see :attr:`RandomLogit.passed`).
        generator: draws the other classes (default: seeded with 0).
        batch_size: inputs per forward for methods that re-run the model (``None``: 8 on a CPU, 32 on a GPU).
        **options: method options.

    Returns:
        A :class:`RandomLogit`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(8, 4)).eval()
        >>> result = random_logit(net, torch.rand(2, 3, 32, 32), ["gradcam", "edges"], "1")
        >>> result.similarity["ssim"].shape, bool((result.classes != result.others).all()), result.passed["edges"]
        (torch.Size([2, 2]), True, False)
    """
    measures = _check_measures(similarity)
    setup = _setup(model, x, method, target_layer, batch_size, options)
    draws = generator if generator is not None else torch.Generator().manual_seed(0)
    base = _chosen(class_idx, setup.x.shape[0])

    def choose(probabilities: Tensor) -> Tensor:
        classes = base(probabilities)[:, 0]
        count = probabilities.shape[1]
        if count < 2:
            raise ValueError("random_logit needs a model with at least two classes")
        drawn = torch.randint(0, count - 1, classes.shape, generator=draws).to(classes.device)
        return torch.stack([classes, drawn + (drawn >= classes).long()], dim=1)

    maps, classes = _maps(setup, setup.net, choose)  # (N, 2, M, H, W)
    maps = maps.transpose(0, 1)
    return RandomLogit(
        [m.name for m in setup.methods],
        classes[:, 0],
        classes[:, 1],
        _similarities(maps[1], maps[0], measures),
        maps,
        float(threshold),
        setup.x.detach().cpu(),
    )


def methods_for_cli() -> list[str]:
    """The names ``camkit sanity --method`` accepts: the registry's and the baselines'."""
    return [*list_methods(), *BASELINES]
