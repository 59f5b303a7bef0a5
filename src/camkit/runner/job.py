"""Explain a whole dataset into a store: :func:`run`, resumable, on one or many processes.

One process per rank; each takes every ``world_size``-th image, decodes in DataLoader workers
while the model runs, and commits one shard per batch to its own part of the store. Under
``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialized here (``nccl`` on CUDA,
``gloo`` on CPU), unless the caller already did.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from camkit.engine import LayerSpec, ModelInput, Progress, resolve_layers
from camkit.models import DEFAULT_MODEL, LoadedModel, Preprocess, load_checkpoint, load_model
from camkit.passes import method_options, run_methods
from camkit.registry import get_method, list_methods
from camkit.runner.data import Batch, Items, Source, collate, dataset_source, folder_source, parse_target, target_text
from camkit.runner.dist import Ranks, setup_ranks
from camkit.runner.maps import chooser
from camkit.runner.report import RunReport
from camkit.runner.sanity import SANITY_IMAGES, check_sanity, compute_sanity, sanity_settings, stored_sanity
from camkit.runner.scores import check_metrics, score_maps
from camkit.runner.store import read_meta
from camkit.runner.writer import PartWriter, RecordRow, prepare_store, read_status, update_meta

__all__ = ["check_device", "run"]

_DTYPES = {"float32": np.float32, "float16": np.float16}
#: how many of the top classes a record keeps in ``.pred``
TOP_PREDICTIONS = 5
#: default images per forward: on a CPU small batches are faster per image (EfficientNet-Lite0 on
#: 2 cores, one thread: 42 ms per image at batch 8, 88 ms at batch 32); a GPU gains from large ones
CPU_BATCH = 8
GPU_BATCH = 64


def _fingerprint(model: nn.Module) -> str:
    """A hash of every parameter and buffer (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:20]


def _load(
    model: nn.Module | LoadedModel | str | None,
    checkpoint: str | os.PathLike[str] | None,
    pretrained: bool,
    preprocess: Preprocess | None,
) -> LoadedModel:
    if model is None or isinstance(model, str):
        name = model or DEFAULT_MODEL
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights are the same in every rank and every resumed run
            loaded = load_checkpoint(checkpoint, name) if checkpoint else load_model(name, pretrained=pretrained)
    elif checkpoint is not None:
        raise ValueError("checkpoint needs model=<architecture name> (e.g. 'torchvision:resnet50'), not a module")
    elif isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, nn.Module):
        kind = type(model)
        loaded = LoadedModel(model, f"{kind.__module__}.{kind.__qualname__}", categories=None, target_layer=None)
    else:
        raise TypeError(f"model must be a name, a LoadedModel or an nn.Module, got {type(model).__name__}")
    if preprocess is not None:
        loaded = LoadedModel(
            loaded.model, loaded.name, preprocess, loaded.categories, loaded.target_layer, loaded.pretrained
        )
    return loaded


def _known_family(name: str) -> bool:
    """Whether a model comes from camkit's loaders (torchvision/timm code: safe in channels-last order)."""
    return name.split("@")[0] == DEFAULT_MODEL or name.startswith(("torchvision:", "timm:"))


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` where maps can be computed, or a one-line ``ValueError``.

    Refuses what ``torch.device`` cannot parse, ``meta`` (tensors without data), a CUDA device on a
    machine without CUDA or with fewer GPUs, and any device that cannot hold a tensor here (``mps``
    off a Mac, ``xpu`` without its build of torch).

    Raises:
        ValueError: naming the device and the fix (``--device cpu``).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("meta")
        Traceback (most recent call last):
        ...
        ValueError: device 'meta' holds no data, so no map can be computed on it: use --device cpu (or cuda)
    """
    text = str(device)
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {text!r} is not a device name: use cpu, cuda, cuda:1, mps ...") from None
    if resolved.type == "meta":
        raise ValueError(f"device {text!r} holds no data, so no map can be computed on it: use --device cpu (or cuda)")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {text!r} is not usable here: CUDA is not available (no NVIDIA GPU or driver, or a "
                "CPU-only build of torch); use --device cpu"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {text!r} is not usable here: this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1}); use one of them or --device cpu"
            )
        return resolved
    try:
        torch.empty(1, device=resolved)
    except Exception as error:  # any backend's failure means the same: not usable here
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise ValueError(f"device {text!r} is not usable here ({reason}); use --device cpu") from None
    return resolved


def _device(device: str | torch.device | None, net: nn.Module, ranks_local: int, own_model: bool) -> torch.device:
    if device is None or str(device) == "auto":
        if not own_model:
            ref = next(iter(net.parameters()), None)
            return ref.device if ref is not None else torch.device("cpu")
        return torch.device(f"cuda:{ranks_local}") if torch.cuda.is_available() else torch.device("cpu")
    resolved = check_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = check_device(f"cuda:{ranks_local}")
    return resolved


def _layers(loaded: LoadedModel, layer: LayerSpec, names: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The target layer names (the given or the model's default), and per method the layers it uses."""
    shape = (3, loaded.preprocess.crop, loaded.preprocess.crop)
    default = resolve_layers(loaded.model, layer if layer is not None else loaded.target_layer, shape)
    resolved: dict[str, list[str]] = {}
    for name in names:
        own = get_method(name).layers
        resolved[name] = list(own(loaded.model)) if own is not None and layer is None else default
    return default, resolved


#: run's own keyword arguments (named when an unknown option is close to one of them)
_KEYWORDS = (
    "methods",
    "model",
    "checkpoint",
    "pretrained",
    "layer",
    "target",
    "batch_size",
    "workers",
    "dtype",
    "device",
    "preprocess",
    "keys",
    "channels_last",
    "overwrite",
    "retry_failed",
    "progress",
    "metrics",
    "layer_maps",
    "sanity",
    "sanity_images",
    "sanity_mode",
)


def _recordable(value: Any) -> Any:
    """An option value as the store's JSON records it (its repr when JSON has no type for it)."""
    return value if value is None or isinstance(value, bool | int | float | str) else repr(value)


def _check(
    methods: str | Sequence[str], batch_size: int | None, workers: int | None, dtype: str | torch.dtype
) -> list[str]:
    asked = [methods] if isinstance(methods, str) else list(methods)
    if not asked:
        raise ValueError("methods is empty: pass at least one method name (see camkit.list_methods())")
    names = list_methods() if "all" in asked else list(dict.fromkeys(get_method(m).name for m in asked))
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be None (device default) or a positive int, got {batch_size!r}")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise ValueError(f"workers must be None (automatic) or an int >= 0, got {workers!r}")
    if str(dtype).removeprefix("torch.") not in _DTYPES:
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    return names


def run(
    source: str | os.PathLike[str] | Dataset[Any],
    out: str | os.PathLike[str],
    methods: str | Sequence[str] = "gradcam",
    model: nn.Module | LoadedModel | str | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    layer: LayerSpec = None,
    target: str = "pred",
    batch_size: int | None = None,
    workers: int | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    preprocess: Preprocess | None = None,
    keys: Sequence[str] | None = None,
    channels_last: bool | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    progress: bool | None = None,
    metrics: Sequence[str] = (),
    layer_maps: bool = False,
    sanity: bool = False,
    sanity_images: int = SANITY_IMAGES,
    sanity_mode: str = "cascading",
    **options: Any,
) -> RunReport:
    """Explain every image of a folder or dataset into a store that :func:`camkit.open_store` reads back.

    Resumable: images already in the store are skipped, so a killed run finishes when started
    again with the same arguments. An image that cannot be read is recorded as failed with its
    reason and not retried unless ``retry_failed``. Under ``torchrun`` every rank takes its share
    of the images and writes its own part of the store.

    Args:
        source: a folder (ImageFolder layout, whose sub-folders give ``label``, or flat) or a
            map-style dataset of PIL images or ``(C, H, W)`` tensors (optionally ``(image, label)``).
        out: the store folder (created; an existing store must have been made with the same options).
        methods: registry name(s), or ``"all"``.
        model: a model name (default: the offline pretrained EfficientNet-Lite0), a
            :class:`~camkit.models.LoadedModel`, or a module.
        checkpoint: a state dict for the architecture named by ``model``.
        pretrained: with a model name: trained weights (local only) or random ones (seeded with 0).
        layer: target layer(s); default: the model's.
        target: which class to explain: ``"pred"``, ``"topk:K"``, ``"class:C"`` or ``"label"``.
        batch_size: images per forward; default: 8 on a CPU (larger batches of a CNN run slower per
            image there: cache pressure), 64 on a GPU.
        workers: DataLoader decoding processes (default: about half the cores per process, 1..8; 0
            decodes in the main process).
        dtype: ``"float32"`` or ``"float16"`` maps in the store.
        device: where the model runs; default: a given module's device, else ``cuda:LOCAL_RANK``
            when CUDA is available, else the CPU. A given device moves the model there.
        preprocess: PIL image → input; default: the model's (ImageNet's for a bare module).
        keys: one key per dataset item (default: its path for an ImageFolder, else its index).
        channels_last: hand the model its batches in channels-last memory order (the model itself
            is not changed); default: on a CPU for the torchvision/timm models camkit's loaders give
            (oneDNN's convolutions run about 25% faster so; the maps differ by float rounding only),
            not for other modules, whose code might ``view`` a channels-last tensor.
        overwrite: replace a store made with other options.
        retry_failed: compute the images recorded as failed again.
        progress: a progress line on rank 0 (default: when stderr is a terminal).
        metrics: per-record metric values to store with the maps, of each method's map of the
            first explained class: ``"drop"``, ``"increase"``, ``"deletion"``, ``"insertion"``
            (:mod:`camkit.runner.scores`; ``camkit view`` shows them and sorts by them). Each costs
            extra forwards; the store records the list (a resumed run must pass the same).
        layer_maps: also store each method's map of each of its target layers on its own (for a
            method of several layers the store holds the reduced map; these are the layers' maps
            before the reduction: ``Record.layer_maps``, the layer switch of ``camkit view``).
            Costs one more pass (forward and backward) per layer.
        sanity: run the model-randomisation sanity check (:func:`camkit.sanity.model_randomization`)
            once per method on the first ``sanity_images`` readable images of the source, with the
            run's model, layer, options and first explained class, and store each method's verdict
            (``Store.sanity``; ``camkit view`` shows it next to the method's name). A resumed run
            keeps verdicts stored with the same settings (:mod:`camkit.runner.sanity`). Costs one
            forward and backward per randomised layer group for those few images.
        sanity_images: how many images the check reads (in chunks of ``batch_size``).
        sanity_mode: ``"cascading"`` (Adebayo et al.'s test) or ``"independent"``.
        **options: method options (``num_samples``, ``max_channels``, ...); each method gets those it
            declares, one that no method declares raises ``TypeError`` naming the closest, and the
            store records them (a resumed run must pass the same).

    Returns:
        The totals over all ranks (every rank gets the same report).

    Raises:
        ValueError: for bad arguments, or a store made with other options (the differences named).
        FileNotFoundError: when the source folder does not exist.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from camkit.models import LoadedModel, Preprocess
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> model = LoadedModel(net.eval(), "tiny", Preprocess(8, 8), target_layer="0")
        >>> report = run([torch.rand(3, 8, 8)] * 4, tempfile.mkdtemp(), model=model, workers=0, progress=False)
        >>> report.computed, report.skipped, report.failed
        (4, 0, [])
    """
    names = _check(methods, batch_size, workers, dtype)
    scores = check_metrics(metrics)
    if sanity:
        check_sanity(sanity_images, sanity_mode)
    if device is not None and str(device) != "auto":
        check_device(device)  # before loading anything
    method_options([get_method(name) for name in names], options, "run", _KEYWORDS)  # before any work
    rule = parse_target(target)
    src = folder_source(source) if isinstance(source, str | os.PathLike) else dataset_source(source, keys)
    if rule[0] == "label" and src.dataset is None and None in src.labels:
        loose = [k for k, label in zip(src.keys, src.labels, strict=True) if label is None][:3]
        raise ValueError(
            f"target 'label' needs every image in a class sub-folder (ImageFolder layout); these are not: {loose}"
        )
    loaded = _load(model, checkpoint, pretrained, preprocess)
    net = loaded.model
    local = int(os.environ.get("LOCAL_RANK", "0"))
    place = _device(device, net, local, model is None or isinstance(model, str) or device is not None)
    default_layer, layers = _layers(loaded, layer, names)
    batch = batch_size or (CPU_BATCH if place.type == "cpu" else GPU_BATCH)
    if channels_last is None:
        channels_last = place.type == "cpu" and _known_family(loaded.name)
    kind = str(dtype).removeprefix("torch.")
    plan = _Plan(
        src, Path(out), names, loaded, layers, rule, batch, kind, place, channels_last, options, scores, layer_maps
    )
    plan.layer_spec = layer
    plan.sanity = sanity_settings(sanity_images, sanity_mode) if sanity else None
    options = plan.options(default_layer)
    ranks = setup_ranks(place)
    was_training = net.training
    try:
        net.to(place).eval()
        return _run_ranks(plan, options, ranks, workers, overwrite, retry_failed, progress)
    finally:
        net.train(was_training)
        ranks.close()


@dataclass
class _Plan:
    """What every batch of a run needs."""

    src: Source
    out: Path
    names: list[str]
    loaded: LoadedModel
    layers: dict[str, list[str]]
    rule: tuple[str, int]
    batch_size: int
    dtype: str
    place: torch.device
    channels_last: bool = False
    method_options: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    layer_maps: bool = False
    layer_spec: LayerSpec = None
    sanity: dict[str, Any] | None = None

    def options(self, default_layer: list[str]) -> dict[str, Any]:
        """What the maps depend on: recorded in the store, compared when a run resumes it."""
        pre = self.loaded.preprocess
        given = {"method_options": {k: _recordable(v) for k, v in sorted(self.method_options.items())}}
        scored: dict[str, Any] = {"metrics": self.metrics} if self.metrics else {}  # made without: no entry
        scored |= {"layer_maps": True} if self.layer_maps else {}
        return (
            ({} if not self.method_options else given)
            | scored
            | {
                "source": self.src.identity,
                "model": self.loaded.name,
                "weights": _fingerprint(self.loaded.model),
                "methods": self.names,
                "layer": default_layer,
                "target": target_text(self.rule),
                "dtype": self.dtype,
                "preprocess": {"resize": pre.resize, "crop": pre.crop, "mean": list(pre.mean), "std": list(pre.std)},
            }
        )


def _sanity(plan: _Plan) -> dict[str, Any] | None:
    """The store's sanity verdicts: read back when stored with the same settings, else computed and stored."""
    if plan.sanity is None:
        return None
    found = stored_sanity(read_meta(plan.out), plan.sanity)
    if found is None:
        found = compute_sanity(
            plan.src,
            plan.loaded,
            plan.names,
            plan.layer_spec,
            plan.rule,
            plan.sanity,
            plan.batch_size,
            plan.place,
            plan.method_options,
        )
        update_meta(plan.out, "sanity", found)
    return found


def _wanted(state: str | None, retry_failed: bool) -> bool:
    """Whether an image with this status in the store must be computed."""
    return state is None or (retry_failed and state == "failed")


def _run_ranks(
    plan: _Plan,
    options: dict[str, Any],
    ranks: Ranks,
    workers: int | None,
    overwrite: bool,
    retry_failed: bool,
    progress: bool | None,
) -> RunReport:
    from camkit import __version__

    src = plan.src
    info = {
        "categories": plan.loaded.categories,
        "classes": src.classes,
        "root": None if src.root is None else src.root.resolve().as_posix(),
        "camkit": __version__,
        "torch": torch.__version__,
    }
    error = None
    verdicts: dict[str, Any] | None = None
    if ranks.rank == 0:
        try:
            prepare_store(plan.out, options, info, overwrite)
            verdicts = _sanity(plan)
        except (ValueError, TypeError) as problem:
            error = str(problem)
        except OSError as problem:
            error = f"cannot create the store at {str(plan.out)!r} ({problem}): pick a writable --out"
    error = ranks.broadcast(error)  # every rank fails alike, or every rank goes on
    if error is not None:
        raise ValueError(error)
    status = read_status(plan.out)
    mine = range(ranks.rank, len(src.keys), ranks.world)
    todo = [i for i in mine if _wanted(status.get(src.keys[i]), retry_failed)]
    report = RunReport(skipped=len(mine) - len(todo), ranks=ranks.world, store=str(plan.out))
    report.sanity = verdicts
    report.skipped_failed = 0 if retry_failed else sum(1 for i in mine if status.get(src.keys[i]) == "failed")
    count = workers if workers is not None else max(1, min(8, (os.cpu_count() or 2) // (2 * ranks.local_world)))
    loader: DataLoader[Any] = DataLoader(
        Items(src, plan.loaded.preprocess),
        batch_size=plan.batch_size,
        sampler=todo,
        num_workers=count if todo else 0,
        collate_fn=collate,
        pin_memory=plan.place.type == "cuda",
    )
    label = "images" if ranks.world == 1 else f"images (rank 0 of {ranks.world})"
    bar = Progress(len(todo), label, enabled=progress if ranks.rank == 0 else False)
    start = time.perf_counter()
    batches = iter(loader)  # the workers start (fork) before the writer opens its lock and manifest
    with PartWriter(plan.out, ranks.rank) as writer:
        while True:
            tick = time.perf_counter()
            batch: Batch | None = next(batches, None)
            report.seconds["wait"] += time.perf_counter() - tick
            if batch is None:
                break
            _one_batch(plan, batch, writer, report)
            bar.update(len(batch))
    bar.close()
    report.seconds["total"] = time.perf_counter() - start
    report.images_per_s = report.computed / report.seconds["total"] if report.seconds["total"] > 0 else 0.0
    merged = RunReport.merge(ranks.gather(report))
    ranks.barrier()
    return merged


def _only(layer: str, _method: str) -> LayerSpec:
    """The target layers of every method in a pass of one layer."""
    return [layer]


def _layer_maps(plan: _Plan, x: torch.Tensor, classes: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Layer → method → its maps of that layer alone ``(N, K, h, w)``, for the classes already chosen."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for layer in dict.fromkeys(name for m in plan.names for name in plan.layers[m]):
        names = [m for m in plan.names if layer in plan.layers[m]]
        _, _, maps, _ = run_methods(
            plan.loaded.model,
            ModelInput.of(x),
            names,
            functools.partial(_only, layer),
            lambda probabilities: classes.to(probabilities.device),
            batch_size=x.shape[0],
            switches={"progress": False},
            where="run",
            keywords=_KEYWORDS,
            **plan.method_options,
        )
        out[layer] = maps
    return out


def _one_batch(plan: _Plan, batch: Batch, writer: PartWriter, report: RunReport) -> None:
    """Explain the good images of a batch and commit them with the failed ones."""
    keys = plan.src.keys
    report.seconds["decode"] += batch.seconds
    failures = [(keys[i], reason) for i, reason in batch.failures]
    keep = [j for j, label in enumerate(batch.labels) if plan.rule[0] != "label" or label is not None]
    failures += [
        (keys[batch.indices[j]], "no label: the dataset item has no integer label (needed by target 'label')")
        for j in range(len(batch.indices))
        if j not in keep
    ]
    rows: list[RecordRow] = []
    array = None
    layout: list[tuple[Any, ...]] = []
    if keep and batch.x is not None:
        tick = time.perf_counter()
        labels = [batch.labels[j] for j in keep]
        x = (batch.x if len(keep) == len(batch.indices) else batch.x[keep]).to(plan.place, non_blocking=True)
        if plan.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        # lean forwards, shared by the methods that read only the target layers; the first also gives the
        # predictions and the classes
        probabilities, classes, maps, _ = run_methods(
            plan.loaded.model,
            ModelInput.of(x),
            plan.names,
            plan.layers.__getitem__,
            chooser(plan.rule, labels),
            batch_size=x.shape[0],
            switches={"progress": False},
            where="run",
            keywords=_KEYWORDS,
            **plan.method_options,
        )
        values, top = probabilities.topk(min(TOP_PREDICTIONS, probabilities.shape[1]), dim=1)
        dtype = _DTYPES[plan.dtype]
        entries: list[tuple[tuple[str, ...], torch.Tensor]] = [((m,), maps[m]) for m in plan.names]
        if plan.layer_maps:
            for layer, at in _layer_maps(plan, x, classes).items():
                entries += [((m, layer), cams) for m, cams in at.items()]
        array = np.concatenate(
            [cams.reshape(len(keep), -1).float().cpu().numpy().astype(dtype) for _, cams in entries], 1
        )
        layout = [(n[0], int(c.shape[1]), int(c.shape[2]), int(c.shape[3]), *n[1:]) for n, c in entries]
        height, width = int(x.shape[-2]), int(x.shape[-1])
        scored = (
            score_maps(plan.loaded.model, x, {m: maps[m] for m in plan.names}, classes, plan.metrics, x.shape[0])
            if plan.metrics
            else [None] * len(keep)
        )
        for j, (cls, idx, val) in enumerate(zip(classes.tolist(), top.tolist(), values.tolist(), strict=True)):
            pred = [(int(c), float(p)) for c, p in zip(idx, val, strict=True)]
            key = keys[batch.indices[keep[j]]]
            rows.append(RecordRow(key, labels[j], [int(c) for c in cls], pred, height, width, scored[j]))
        report.seconds["model"] += time.perf_counter() - tick
    tick = time.perf_counter()
    writer.commit(rows, array, layout, failures)
    report.seconds["write"] += time.perf_counter() - tick
    report.computed += len(rows)
    report.failed += failures
