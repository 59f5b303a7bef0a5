"""The ``camkit`` command: explain images, list methods and layers, write an HTML report, explain a dataset.

Every list of choices comes from the registry. A user error prints one line that names the fix
(exit code 2 for bad arguments, 1 for inputs that cannot be used) and never a traceback; set
``CAMKIT_DEBUG=1`` to see the traceback instead. Arguments (numbers, colormap, output path,
device, layer) are checked before any map is computed. An image that cannot be read is skipped:
the others are written, the skipped ones are listed at the end, and the exit code is 1.

Example:
    >>> main(["methods"])  # doctest: +ELLIPSIS
    ablationcam ...
    0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from camkit import __version__
from camkit.detect._command import add_detect_arguments, detect_command, is_detector, layers_command, report_command
from camkit.engine import LayerSpec, Progress, candidate_layers, default_batch_size, eval_mode, resolve_layers
from camkit.explanation import Explanation, explain, open_image
from camkit.models import DEFAULT_MODEL, LoadedModel, Preprocess, load_checkpoint, load_model
from camkit.passes import method_options
from camkit.registry import get_method, list_methods
from camkit.runner.command import add_option_argument, check_colormap, export_command, layer_message, run_command
from camkit.runner.command import add_parsers as add_runner_parsers
from camkit.runner.data import IMAGE_SUFFIXES
from camkit.runner.export import check_out, output_bases
from camkit.runner.job import check_device
from camkit.sanity._command import REPORT_NOTE, check_arguments, overall, report_cells, sanity_command
from camkit.sanity._command import add_arguments as add_sanity_arguments
from camkit.viewer._command import add_parser as add_view_parser
from camkit.viewer._command import view_command
from camkit.viz import grid, overlay_mask

__all__ = ["main"]


class UserError(Exception):
    """A problem with the command line or its inputs; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        command = " ".join(self.prog.split()[1:])  # "" for camkit itself, "explain" for its subcommand
        self.exit(2, f"camkit: error: {message} (see camkit {command + ' ' if command else ''}--help)\n")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model name: {DEFAULT_MODEL} (default, pretrained, offline), torchvision:ARCH or timm:ARCH",
    )
    parser.add_argument("--checkpoint", type=Path, help="a state dict file for --model's architecture")
    parser.add_argument("--labels", type=Path, help="a text file of class names, one per line, in class order")
    parser.add_argument("--no-pretrained", action="store_true", help="random weights (no local weights needed)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default: cpu)")


def _add_explain_arguments(parser: argparse.ArgumentParser, default_method: str) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    methods = [*list_methods(), "fast", "all"]
    parser.add_argument(
        "--method",
        action="append",
        choices=methods,
        metavar="METHOD",
        help=f"CAM method, repeatable (default: {default_method}); one of: {', '.join(methods)} "
        "(fast: the methods that need one forward per image; all: every method, some cost thousands)",
    )
    _add_model_arguments(parser)
    parser.add_argument("--layer", action="append", help="target layer name, repeatable (default: the model's)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--class", dest="class_idx", type=int, help="class index to explain for every image")
    target.add_argument("--topk", type=int, default=1, help="explain the K most probable classes (default: 1)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="inputs per forward (images and perturbations; default: 8 on a CPU, 32 on a GPU)",
    )
    parser.add_argument("--colormap", default="jet", help="overlay colormap (default: jet)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the image in the overlay (default: 0.5)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    add_option_argument(parser)


#: the deletion/insertion steps of `camkit report`'s metrics when --metrics-steps is not given
METRICS_STEPS = 16


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``explain``, ``report``, ``run``, ``export``, ``sanity``, ``methods``, ``layers``)."""
    parser = _Parser(prog="camkit", description="Class activation maps for PyTorch models.")
    parser.add_argument("--version", action="version", version=f"camkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    explain_cmd = sub.add_parser(
        "explain",
        help="write overlay PNGs and raw maps (.npy) per image, method and class, a grid of them, and "
        "predictions.csv/.json",
    )
    _add_explain_arguments(explain_cmd, "gradcam")
    explain_cmd.add_argument(
        "--out",
        type=Path,
        default=Path("camkit-out"),
        help="output folder; it mirrors the input folders (default: camkit-out)",
    )
    explain_cmd.add_argument(
        "--full-image",
        action="store_true",
        help="overlays and maps at each image's original size (the map covers the centre crop the model "
        "saw; no heat outside it) instead of the crop",
    )
    add_detect_arguments(explain_cmd)
    report = sub.add_parser("report", help="write a self-contained HTML page of images x methods")
    _add_explain_arguments(report, "fast; with --task detect: gradcam")
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file to write")
    report.add_argument(
        "--metrics-steps",
        type=int,
        default=None,
        help=f"deletion/insertion steps of the per-image faithfulness metrics; 0 skips the metrics (default: "
        f"{METRICS_STEPS}; classifiers only)",
    )
    report.add_argument(
        "--sanity",
        action="store_true",
        help="add a sanity column: each method's cascading model-randomisation check (one forward and backward per "
        "randomised layer group; docs/sanity.md; classifiers only)",
    )
    add_detect_arguments(report)
    add_runner_parsers(sub)
    add_view_parser(sub)
    sanity = sub.add_parser("sanity", help="check that the maps depend on the model's parameters (model randomisation)")
    add_sanity_arguments(sanity)
    _add_model_arguments(sanity)
    sanity.add_argument("--layer", action="append", help="target layer name, repeatable (default: the model's)")
    add_option_argument(sanity)
    sub.add_parser("methods", help="list the CAM methods with one-line descriptions")
    layers = sub.add_parser(
        "layers",
        help="list candidate target layers with their output shapes (detectors too: a torchvision detection builder, "
        "ultralytics:CONFIG.yaml, transformers:FOLDER)",
    )
    _add_model_arguments(layers)
    layers.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the model's)")
    layers.add_argument("--all", action="store_true", help="also list layers without spatial outputs")
    return parser


def _load(args: argparse.Namespace) -> LoadedModel:
    device = check_device(args.device)  # before loading anything
    if args.checkpoint is not None:
        loaded = load_checkpoint(args.checkpoint, args.model)
    else:
        loaded = load_model(args.model, pretrained=not args.no_pretrained)
    if args.labels is not None:
        if not args.labels.is_file():
            raise UserError(
                f"--labels {str(args.labels)!r} does not exist: pass a text file with one class name per line"
            )
        loaded.categories = [
            line.strip() for line in args.labels.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    try:
        loaded.model.to(device)
    except (RuntimeError, AssertionError) as error:
        raise UserError(f"device {args.device!r} is not usable here ({error}); try --device cpu") from error
    return loaded


@dataclass(frozen=True)
class _Input:
    """One image to explain.

    Attributes:
        path: the file.
        key: its path relative to the folder given (``/``-separated; the folder's name first when
            several folders are given), or its name for a file given by itself.
        base: where its files go, relative to ``--out``, before ``_<method>_<class>.png``
            (:func:`camkit.runner.export.output_bases`).
    """

    path: Path
    key: str
    base: str


def _image_files(folder: Path, skip: str | None = None) -> list[Path]:
    """The images under ``folder``, recursively: sorted names, a folder's files before its sub-folders.

    Names starting with ``.`` are left out, and so is the sub-folder ``skip`` (a real path: the
    output folder, whose overlays a second run must not explain); a folder reached twice through
    links is read once.
    """
    found: list[Path] = []
    visited: set[str] = set()
    for here, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(here, d)) != skip)
        found.extend(
            Path(here) / f for f in sorted(files) if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        )
    return found


def _collect(paths: Sequence[Path], out: Path | None = None) -> list[_Input]:
    """The images to explain, each once, with collision-free output names (checked before any work).

    Folders are searched recursively, except the output folder ``out`` when it lies inside one.
    """
    skip = os.path.realpath(out) if out is not None else None
    several = sum(1 for path in paths if path.is_dir()) > 1
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            files = _image_files(path, skip)
            if not files:
                raise UserError(
                    f"folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}), nor do its sub-folders"
                )
            prefix = f"{path.resolve().name or 'root'}/" if several else ""
            pairs = [(file, prefix + file.relative_to(path).as_posix()) for file in files]
        elif path.is_file():
            pairs = [(path, path.name)]
        else:
            raise UserError(f"image {str(path)!r} does not exist: check the path")
        for file, key in pairs:
            real = file.resolve()
            if real not in seen:  # a file given twice (itself and in its folder) is explained once
                seen.add(real)
                found.append((file, key))
    bases = output_bases([key for _, key in found], [str(file) for file, _ in found])
    return [_Input(file, key, base) for (file, key), base in zip(found, bases, strict=True)]


def fast_methods() -> list[str]:
    """The methods that need one forward (and backward) per image and are deterministic: ``--method fast``."""
    return [name for name in list_methods() if get_method(name).cost == "0" and not get_method(name).stochastic]


def _methods(args: argparse.Namespace, default: str) -> list[str]:
    chosen = args.method or [default]
    if "all" in chosen:
        return list_methods()
    if "fast" in chosen:
        return list(dict.fromkeys([*fast_methods(), *(c for c in chosen if c != "fast")]))
    return list(dict.fromkeys(chosen))


def _check_numbers(args: argparse.Namespace) -> None:
    if args.topk < 1:
        raise UserError(f"--topk must be at least 1, got {args.topk}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.alpha < 1:
        raise UserError(f"--alpha must be in [0, 1) (the weight of the image), got {args.alpha}")
    if (getattr(args, "metrics_steps", None) or 0) < 0:
        raise UserError(f"--metrics-steps must be 0 (no metrics) or more, got {args.metrics_steps}")


@dataclass
class _Plan:
    """What a checked ``explain``/``report`` command runs: the model, the images, the methods, the layer."""

    loaded: LoadedModel
    inputs: list[_Input]
    names: list[str]
    layer: LayerSpec
    options: dict[str, Any]


def _prepare(args: argparse.Namespace, default: str, *, out_file: bool) -> _Plan:
    """Check every argument, then load the model: nothing is computed or written before all are good."""
    _check_numbers(args)
    if args.batch_size is None:
        args.batch_size = default_batch_size(args.device)
    check_colormap(args.colormap)
    check_out(args.out, file=out_file, name="--out")
    inputs = _collect(args.images, None if out_file else args.out)
    names = _methods(args, default)
    options = dict(args.option)
    method_options([get_method(name) for name in names], options, "--option", ())  # before loading anything
    loaded = _load(args)
    num_classes = len(loaded.categories) if loaded.categories else None
    if args.class_idx is not None and num_classes is not None and not 0 <= args.class_idx < num_classes:
        raise UserError(
            f"--class {args.class_idx} is out of range: the model has {num_classes} classes (0..{num_classes - 1})"
        )
    layer = args.layer[0] if args.layer and len(args.layer) == 1 else args.layer
    if layer is not None:
        try:
            resolve_layers(loaded.model, layer, (3, loaded.preprocess.crop, loaded.preprocess.crop))
        except ValueError as error:
            no_weights = args.no_pretrained or args.checkpoint is not None
            raise UserError(layer_message(error, args.model, no_weights)) from None
    return _Plan(loaded, inputs, names, layer, options)


def _batches(
    args: argparse.Namespace, plan: _Plan, failures: list[tuple[_Input, str]]
) -> Iterator[tuple[list[_Input], list[Image.Image], Explanation]]:
    """Explain the images batch by batch: the usable ones, their originals and the result.

    An image that cannot be read, or that :func:`camkit.explain` refuses (a ``ValueError``, e.g. an
    image too small), is appended to ``failures`` with the reason and skipped: a batch that fails is
    explained again image by image, so only the images at fault are left out.
    """
    classes = 1 if args.class_idx is not None else args.topk
    count = len(plan.inputs)
    warning = _cost_warning(plan.loaded, plan.layer, plan.names, plan.options, count, classes, args.batch_size)
    if warning:
        print(warning, file=sys.stderr, flush=True)

    def run(images: list[Image.Image]) -> Explanation:
        return explain(
            plan.loaded,
            images,
            plan.names,
            target_layer=plan.layer,
            class_idx=args.class_idx,
            topk=args.topk,
            batch_size=args.batch_size,
            progress=None if not args.quiet else False,
            **plan.options,
        )

    bar = Progress(count, "images", enabled=None if not args.quiet else False)
    try:
        for start in range(0, count, args.batch_size):
            chunk = plan.inputs[start : start + args.batch_size]
            known = len(failures)
            readable: list[_Input] = []
            images: list[Image.Image] = []
            for item in chunk:
                try:
                    images.append(open_image(item.path))
                except (OSError, ValueError) as error:
                    failures.append((item, _reason(error)))
                    continue
                readable.append(item)
            parts = [(readable, images)] if readable else []
            while parts:
                items, pictures = parts.pop(0)
                try:
                    result = run(pictures)
                except ValueError as error:
                    if len(items) == 1:
                        failures.append((items[0], _reason(error)))
                    else:  # find the images at fault: each alone
                        parts = [([item], [picture]) for item, picture in zip(items, pictures, strict=True)] + parts
                    continue
                yield items, pictures, result
            failures[known:] = sorted(failures[known:], key=lambda failure: chunk.index(failure[0]))  # input order
            bar.update(len(chunk))
    finally:
        bar.close()


def _reason(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _nothing_done(failures: Sequence[tuple[_Input, str]]) -> UserError:
    """The error when no image could be used: the reason itself when it is one, else the list above it."""
    reasons = {reason for _, reason in failures}
    if len(reasons) == 1:  # one image, or one problem of the whole run
        return UserError(reasons.pop())
    _print_skipped(failures)
    return UserError(
        f"none of the {len(failures)} images could be used (listed above): pass image files "
        f"({', '.join(IMAGE_SUFFIXES)}) that open in an image viewer"
    )


def _print_skipped(failures: Sequence[tuple[_Input, str]]) -> None:
    for item, reason in failures:
        print(f"camkit: skipped {item.path}: {reason}", file=sys.stderr)


def _skipped_summary(failures: Sequence[tuple[_Input, str]], total: int, written: str) -> int:
    """List the skipped images on stderr with a last error line; the exit code (1 when any, else 0)."""
    if not failures:
        return 0
    _print_skipped(failures)
    print(
        f"camkit: error: {len(failures)} of {total} images were skipped (listed above); "
        f"{written}: fix or remove the files listed and run again",
        file=sys.stderr,
    )
    return 1


#: a run estimated to take longer than this gets a warning line with the estimate first
LONG_RUN_SECONDS = 60.0


def long_run_warning(forwards: Mapping[str, int], images: int, classes: int, seconds_per_forward: float) -> str | None:
    """The warning line for a run whose model forwards would take long, or ``None``.

    Args:
        forwards: method name → model forwards per image and class (:meth:`MethodSpec.forwards`).
        images: how many images.
        classes: explained classes per image.
        seconds_per_forward: the measured time of one image's forward.

    Returns:
        One line naming the costly methods and the estimate, or ``None`` under :data:`LONG_RUN_SECONDS`.

    Example:
        >>> long_run_warning({"gradcam": 1, "scorecam": 1281}, 2, 1, 0.02) is None  # 2,562 forwards: 51 s
        True
        >>> long_run_warning({"gradcam": 1, "scorecam": 1281}, 2, 3, 0.02)[:61]
        'camkit: about 7,682 model forwards (scorecam 1,281 per image '
    """
    extra = {name: count - 1 for name, count in forwards.items() if count > 1}
    total = images * (1 + classes * sum(extra.values()))
    seconds = total * seconds_per_forward
    if seconds < LONG_RUN_SECONDS:
        return None
    costly = ", ".join(f"{name} {count + 1:,}" for name, count in sorted(extra.items(), key=lambda kv: -kv[1]))
    took = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
    return (
        f"camkit: about {total:,} model forwards ({costly} per image and class), roughly {took} on this machine; "
        "`camkit methods` lists each method's cost, and --option max_channels=64 caps the Score-CAM family"
    )


def _cost_warning(
    loaded: LoadedModel,
    layer: Any,
    names: Sequence[str],
    options: dict[str, Any],
    images: int,
    classes: int,
    batch: int,
) -> str | None:
    """The long-run warning for this run: the target layer's shape, and one timed forward when it may matter."""
    specs = [get_method(name) for name in names]
    if all(spec.cost == "0" for spec in specs):
        return None  # one forward (and backward) per image: never long for a folder of photos
    size = (3, loaded.preprocess.crop, loaded.preprocess.crop)
    chosen = resolve_layers(loaded.model, layer if layer is not None else loaded.target_layer, size)[0]
    shape = dict(candidate_layers(loaded.model, size))[chosen]
    channels, positions = (shape[1], int(torch.tensor(shape[2:]).prod())) if len(shape) > 2 else (1, 1)
    forwards = {
        spec.name: spec.forwards(channels, positions, {k: v for k, v in options.items() if k in spec.options})
        for spec in specs
    }
    x = torch.zeros((min(batch, 8), *size), device=next(loaded.model.parameters()).device)
    with torch.inference_mode(), eval_mode(loaded.model):
        loaded.model(x)  # warm-up
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            loaded.model(x)
            timings.append(time.perf_counter() - start)
        seconds = min(timings) / x.shape[0]
    return long_run_warning(forwards, images, classes, seconds)


def _shown(top: Sequence[tuple[int, str, float]]) -> str:
    return ", ".join(f"{name} ({index}) {p:.1%}" for index, name, p in top)


def _crop_geometry(preprocess: Preprocess, width: int, height: int) -> tuple[float, float, int, int]:
    """Where :meth:`Preprocess.view` takes the model's input from an image of ``width`` x ``height``.

    Returns:
        ``(scale_x, scale_y, left, top)``: resized pixels per original pixel along each axis, and the
        crop's top-left corner in the resized image (the crop is ``preprocess.crop`` pixels square).
    """
    size, left, top = preprocess.geometry(width, height)
    return size[0] / width, size[1] / height, left, top


def _axis_weights(pixels: int, scale: float, offset: int, crop: int, cells: int) -> Tensor:
    """Linear interpolation weights ``(pixels, cells)`` from a map's cells to the original pixels of one axis.

    Original pixel ``i`` (centre ``i + 0.5``) is at ``(i + 0.5) * scale - offset`` in the crop; a
    pixel outside the crop gets no weight (no heat).
    """
    centre = (torch.arange(pixels, dtype=torch.float64) + 0.5) * scale - offset
    inside = (centre >= 0) & (centre < crop)
    position = (centre * cells / crop - 0.5).clamp(0, cells - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=cells - 1)
    frac = position - low
    weights = torch.zeros(pixels, cells, dtype=torch.float64)
    rows = torch.arange(pixels)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    weights[~inside] = 0
    return weights


def full_image_map(cam: Tensor, size: tuple[int, int], preprocess: Preprocess) -> Tensor:
    """A map of the model's input (the centre crop) placed on the original image: ``--full-image``.

    The crop that :meth:`Preprocess.view` takes (the shorter side resized to ``preprocess.resize``,
    then the centre ``preprocess.crop`` square) is mapped back to the original image's pixels; the
    map is interpolated linearly over that region, and the rest of the image gets 0 (no heat: the
    model did not see it).

    Args:
        cam: ``(h, w)`` map in ``[0, 1]`` over the crop, any resolution.
        size: the original image's ``(width, height)``.
        preprocess: the model's preprocessing.

    Returns:
        The ``(height, width)`` float32 CPU map.

    Example:
        >>> full = full_image_map(torch.ones(4, 4), (20, 10), Preprocess(resize=10, crop=10))
        >>> full.shape, full[:, 5:15].min().item(), full[:, :5].max().item(), full[:, 15:].max().item()
        (torch.Size([10, 20]), 1.0, 0.0, 0.0)
    """
    width, height = size
    scale_x, scale_y, left, top = _crop_geometry(preprocess, width, height)
    values = cam.detach().to("cpu", torch.float64)
    across = _axis_weights(width, scale_x, left, preprocess.crop, values.shape[1])
    down = _axis_weights(height, scale_y, top, preprocess.crop, values.shape[0])
    return (down @ values @ across.T).clamp(0.0, 1.0).float()


#: the top predictions recorded per image in predictions.csv/.json (at least; ``--topk`` more)
RECORDED_PREDICTIONS = 5


def _rank(probabilities: Tensor, cls: int) -> int:
    """The 1-based rank of class ``cls`` among ``probabilities`` (1: the most probable)."""
    return int((probabilities > probabilities[cls]).sum().item()) + 1


def _write_image(
    args: argparse.Namespace,
    plan: _Plan,
    result: Explanation,
    i: int,
    item: _Input,
    original: Image.Image,
    written: dict[str, set[Path]],
) -> dict[str, Any]:
    """Write one image's overlays, raw maps and grid; return its entry of predictions.json."""
    assert result.images is not None
    classes = [int(c) for c in result.classes[i].tolist()]
    probabilities = result.probabilities[i].detach().float().cpu()
    canvas = original.convert("RGB") if args.full_image else result.images[i]
    base = args.out / item.base
    base.parent.mkdir(parents=True, exist_ok=True)
    cams: dict[str, list[Tensor]] = {name: [] for name in plan.names}
    explained = []
    for rank, cls in enumerate(classes):
        files = {}
        for name in plan.names:
            cam = result.maps[name][i, rank].detach().float().cpu()
            if args.full_image:
                cam = full_image_map(cam, canvas.size, plan.loaded.preprocess)
            cams[name].append(cam)
            png = base.with_name(f"{base.name}_{name}_{cls}.png")
            overlay_mask(canvas, cam, args.colormap, args.alpha).save(png)
            np.save(png.with_suffix(".npy"), cam.numpy())
            written["overlay"].add(png)
            written["map"].add(png.with_suffix(".npy"))
            files[name] = png.relative_to(args.out).as_posix()
        explained.append(
            {
                "rank": _rank(probabilities, cls),
                "class": cls,
                "name": result.label(cls),
                "probability": round(float(probabilities[cls]), 6),
                "overlays": files,
            }
        )
    figure_file = None
    if len(plan.names) * len(classes) > 1:  # the methods side by side, one row per explained class
        figure = grid(
            [canvas] * len(classes),
            cams,
            colormap=args.colormap,
            alpha=args.alpha,
            row_labels=[f"{result.label(c)} ({c})" for c in classes],
        )
        path = base.with_name(f"{base.name}_grid.png")
        figure.save(path)
        written["grid"].add(path)
        figure_file = path.relative_to(args.out).as_posix()
    top = result.top(max(RECORDED_PREDICTIONS, args.topk))[i]
    return {
        "image": str(item.path),
        "key": item.key,
        "top": [{"rank": r, "class": c, "name": n, "probability": round(p, 6)} for r, (c, n, p) in enumerate(top, 1)],
        "explained": explained,
        "grid": figure_file,
        "error": None,
    }


_CSV_COLUMNS = ("image", "rank", "class", "name", "probability", "explained", "error")


def _write_predictions(folder: Path, entries: Sequence[dict[str, Any]], about: dict[str, Any]) -> list[Path]:
    """``predictions.csv`` (one row per image and class: the top ones and the explained ones) and ``.json``."""
    table = folder / "predictions.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_CSV_COLUMNS)
        for entry in entries:
            if entry["error"] is not None:
                writer.writerow([entry["image"], "", "", "", "", "", entry["error"]])
                continue
            explained = {e["class"] for e in entry["explained"]}
            rows = {p["class"]: p for p in entry["top"]} | {e["class"]: e for e in entry["explained"]}
            for row in sorted(rows.values(), key=lambda r: r["rank"]):
                flag = int(row["class"] in explained)
                writer.writerow(
                    [entry["image"], row["rank"], row["class"], row["name"], f"{row['probability']:.6f}", flag, ""]
                )
    document = folder / "predictions.json"
    text = json.dumps({**about, "images": list(entries)}, indent=1, ensure_ascii=False)
    document.write_text(text + "\n", encoding="utf-8")
    return [table, document]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _explain(args: argparse.Namespace) -> int:
    plan = _prepare(args, "gradcam", out_file=False)
    failures: list[tuple[_Input, str]] = []
    written: dict[str, set[Path]] = {"overlay": set(), "map": set(), "grid": set()}
    entries: dict[_Input, dict[str, Any]] = {}
    shown: list[str] = []
    layers: set[str] = set()
    for items, originals, result in _batches(args, plan, failures):
        top = result.top(3)
        for i, item in enumerate(items):
            entries[item] = _write_image(args, plan, result, i, item, originals[i], written)
            shown.append(f"{item.key}: {_shown(top[i])}")
        layers |= {name for used in result.layers.values() for name in used[:1]}
    if not entries:
        raise _nothing_done(failures)
    for item, reason in failures:
        entries[item] = {"image": str(item.path), "key": item.key, "top": [], "explained": [], "error": reason}
    about = {
        "model": plan.loaded.name,
        "methods": plan.names,
        "layers": sorted(layers),
        "full_image": bool(args.full_image),
    }
    tables = _write_predictions(args.out, [entries[item] for item in plan.inputs if item in entries], about)
    print("\n".join(shown))
    grids = f", {_plural(len(written['grid']), 'grid')} (.png)" if written["grid"] else ""
    print(
        f"wrote {_plural(len(written['overlay']), 'overlay')} (.png), {_plural(len(written['map']), 'raw map')} "
        f"(.npy){grids}, {' and '.join(t.name for t in tables)} to {args.out}/ "
        f"[model {plan.loaded.name}, layer(s) {', '.join(sorted(layers))}]"
    )
    done = len(entries) - len(failures)
    return _skipped_summary(failures, len(plan.inputs), f"the other {done} were written to {args.out}/")


def _explain_detections(args: argparse.Namespace) -> int:
    """``camkit explain --task detect``: the numbers, colormap and output folder checked before the detector loads."""
    _check_numbers(args)
    check_colormap(args.colormap)
    check_out(args.out, file=False, name="--out")
    inputs = _collect(args.images, args.out)
    failures, written = detect_command(args, inputs)
    return _skipped_summary(failures, len(inputs), written)


def _report(args: argparse.Namespace) -> int:
    from camkit.viz.report import ReportRow, write_report

    if args.task == "detect":
        _check_numbers(args)
        check_colormap(args.colormap)
        check_out(args.out, file=True, name="--out")
        inputs = _collect(args.images)
        skipped, written = report_command(args, inputs)
        return _skipped_summary(skipped, len(inputs), written)
    if args.metrics_steps is None:
        args.metrics_steps = METRICS_STEPS
    plan = _prepare(args, "fast", out_file=True)
    failures: list[tuple[_Input, str]] = []
    rows = []
    shown: list[str] = []
    images = 0
    checks: list[Mapping[str, Any]] = []  # per row: method -> its sanity cell (--sanity)
    for items, _, result in _batches(args, plan, failures):
        assert result.images is not None
        scores = _faithfulness(plan.loaded, result, plan.names, args) if args.metrics_steps else None
        sanity = (
            report_cells(plan.loaded, result, plan.names, plan.layer, args.batch_size, plan.options)
            if args.sanity
            else None
        )
        top = result.top(3)
        for i, item in enumerate(items):
            classes = [int(c) for c in result.classes[i].tolist()]
            for rank, cls in enumerate(classes):
                rows.append(
                    ReportRow(
                        title=item.key if len(classes) == 1 else f"{item.key}: {result.label(cls)} ({cls})",
                        image=result.images[i],
                        predictions=[(name, p) for _, name, p in top[i]],
                        maps={name: result.maps[name][i, rank] for name in plan.names},
                        metrics={} if scores is None else scores[rank][i],
                        sanity={} if sanity is None else sanity[rank][i],
                    )
                )
                checks.append(rows[-1].sanity)
            shown.append(f"{item.key}: {_shown(top[i])}")
        images += len(items)
    if not rows:
        raise _nothing_done(failures)
    if args.class_idx is not None:
        explained = str(args.class_idx)
    else:
        explained = "top-1" if args.topk == 1 else f"top-{args.topk}, one row per class"
    subtitle = f"model {plan.loaded.name}; explained class: {explained}"
    verdict: dict[str, Any] = {}
    if args.sanity:
        verdict = {"sanity": overall(checks), "sanity_note": REPORT_NOTE}
    path = write_report(args.out, rows, subtitle=subtitle, colormap=args.colormap, alpha=args.alpha, **verdict)
    print("\n".join(shown))
    print(f"wrote {path} ({_plural(images, 'image')} x {_plural(len(plan.names), 'method')})")
    return _skipped_summary(failures, len(plan.inputs), f"the other {images} are in {path}")


def _sanity(args: argparse.Namespace) -> int:
    check_arguments(args)
    inputs = _collect(args.images, args.out)
    return sanity_command(args, _load(args), [(item.path, item.base) for item in inputs])


def _faithfulness(
    loaded: LoadedModel, result: Explanation, names: Sequence[str], args: argparse.Namespace
) -> list[list[dict[str, dict[str, float]]]]:
    """Per explained class (rank), image and method: average drop, increase, deletion and insertion AUC."""
    from camkit.metrics import confidence_change, deletion, insertion

    assert result.images is not None
    device = next(iter(loaded.model.parameters())).device
    x = torch.stack([loaded.preprocess.to_tensor(view) for view in result.images]).to(device)
    options = {"steps": args.metrics_steps, "batch_size": args.batch_size, "progress": False}  # the CLI's own line
    per_rank = []
    for rank in range(result.classes.shape[1]):
        classes = result.classes[:, rank].tolist()
        per_image: list[dict[str, dict[str, float]]] = [{} for _ in classes]
        for name in names:
            maps = result.maps[name][:, rank]
            change = confidence_change(loaded.model, x, maps, classes, batch_size=args.batch_size)
            deleted = deletion(loaded.model, x, maps, classes, baseline=0.0, **options)
            inserted = insertion(loaded.model, x, maps, classes, baseline="blur", **options)
            columns = {
                "drop ↓": change.drop.per_sample,
                "increase ↑": change.increase.per_sample,
                "deletion ↓": deleted.per_sample,
                "insertion ↑": inserted.per_sample,
            }
            for i in range(len(classes)):
                per_image[i][name] = {metric: float(values[i]) for metric, values in columns.items()}
        per_rank.append(per_image)
    return per_rank


def _methods_cmd() -> int:
    names = list_methods()
    width = max(len(n) for n in names)
    for name in names:
        spec = get_method(name)
        options = ", ".join(f"{key}={option.default!r}" for key, option in spec.options.items())
        cost = "1" if spec.cost == "0" else f"1 + {spec.cost}"
        line = f"{name:<{width}}  {spec.family:<12}  {spec.summary}  [forwards per image: {cost}]"
        print(line + (f"  [--option {options}]" if options else ""))
    return 0


def _layers(args: argparse.Namespace) -> int:
    """List the layers in the order of their last calls, with the output shape of that call (what maps read)."""
    if is_detector(args.model):  # torchvision detection builders, ultralytics:CONFIG, transformers:FOLDER
        return layers_command(args)
    if args.input_size is not None and args.input_size < 1:
        raise UserError(f"--input-size must be at least 1, got {args.input_size}")
    loaded = _load(args)
    size = args.input_size or loaded.preprocess.crop
    shapes = candidate_layers(loaded.model, (3, size, size))
    header = f"[model {loaded.name}, input 3x{size}x{size}; a layer called more than once: its last call]"
    print(f"{'layer':<40} output shape   {header}")
    for name, shape in shapes:
        if len(shape) < 3 and not args.all:
            continue
        mark = "  <- default" if name == loaded.target_layer else ""
        print(f"{name or '(model)':<40} {'x'.join(map(str, shape[1:]))}{mark}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``camkit`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "methods":
            return _methods_cmd()
        if args.command == "layers":
            return _layers(args)
        if args.command == "explain":
            return _explain_detections(args) if args.task == "detect" else _explain(args)
        if args.command == "run":
            return run_command(args)
        if args.command == "export":
            return export_command(args)
        if args.command == "sanity":
            return _sanity(args)
        if args.command == "view":
            return view_command(args)
        return _report(args)
    except (UserError, ValueError, TypeError, FileNotFoundError, ImportError) as error:
        if os.environ.get("CAMKIT_DEBUG"):
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"camkit: error: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `camkit methods | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("camkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
