"""The ``camkit`` command: explain images, list methods and layers, write an HTML report, explain a dataset.

Every list of choices comes from the registry. A user error prints one line that names the fix
(exit code 2 for bad arguments, 1 for inputs that cannot be used) and never a traceback; set
``CAMKIT_DEBUG=1`` to see the traceback instead.

Example:
    >>> main(["methods"])  # doctest: +ELLIPSIS
    ablationcam ...
    0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from camkit import __version__
from camkit.engine import Progress, candidate_layers, eval_mode, resolve_layers
from camkit.explanation import Explanation, explain, open_image
from camkit.models import DEFAULT_MODEL, LoadedModel, load_checkpoint, load_model
from camkit.passes import method_options
from camkit.registry import get_method, list_methods
from camkit.runner.command import add_option_argument, export_command, run_command
from camkit.runner.command import add_parsers as add_runner_parsers
from camkit.runner.data import IMAGE_SUFFIXES
from camkit.viz import grid

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
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per forward (images and perturbations)")
    parser.add_argument("--colormap", default="jet", help="overlay colormap (default: jet)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the image in the overlay (default: 0.5)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    add_option_argument(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands ``explain``, ``report``, ``run``, ``export``, ``methods``, ``layers``)."""
    parser = _Parser(prog="camkit", description="Class activation maps for PyTorch models.")
    parser.add_argument("--version", action="version", version=f"camkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    explain_cmd = sub.add_parser(
        "explain", help="write overlay PNGs and raw maps (.npy) per image, method and class (+ a grid of methods)"
    )
    _add_explain_arguments(explain_cmd, "gradcam")
    explain_cmd.add_argument("--out", type=Path, default=Path("camkit-out"), help="output folder")
    report = sub.add_parser("report", help="write a self-contained HTML page of images x methods")
    _add_explain_arguments(report, "fast")
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file to write")
    report.add_argument(
        "--metrics-steps",
        type=int,
        default=16,
        help="deletion/insertion steps of the per-image faithfulness metrics; 0 skips the metrics (default: 16)",
    )
    add_runner_parsers(sub)
    sub.add_parser("methods", help="list the CAM methods with one-line descriptions")
    layers = sub.add_parser("layers", help="list candidate target layers with their output shapes")
    _add_model_arguments(layers)
    layers.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the model's)")
    layers.add_argument("--all", action="store_true", help="also list layers without spatial outputs")
    return parser


def _load(args: argparse.Namespace) -> LoadedModel:
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
        device = torch.device(args.device)
        loaded.model.to(device)
    except (RuntimeError, AssertionError) as error:
        raise UserError(f"device {args.device!r} is not usable here ({error}); try --device cpu") from error
    return loaded


def _collect(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"image {str(path)!r} does not exist: check the path")
    return files


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
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.alpha < 1:
        raise UserError(f"--alpha must be in [0, 1), got {args.alpha}")


def _run(args: argparse.Namespace, default: str) -> tuple[LoadedModel, list[Path], list[str], list[Explanation]]:
    """Explain every image in batches; returns the model, the files, the methods and one result per batch."""
    _check_numbers(args)
    files = _collect(args.images)
    names = _methods(args, default)
    options = dict(args.option)
    method_options([get_method(name) for name in names], options, "--option", ())  # before loading anything
    loaded = _load(args)
    images = [open_image(f) for f in files]  # fail on a corrupt file before any work
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
            hint = f"list the layers with: camkit layers --model {args.model}"
            raise UserError(f"{str(error).split('; did you')[0]}; {hint}") from None
    classes = 1 if args.class_idx is not None else args.topk
    warning = _cost_warning(loaded, layer, names, options, len(files), classes, args.batch_size)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    bar = Progress(len(files), "images", enabled=None if not args.quiet else False)
    results = []
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        results.append(
            explain(
                loaded,
                chunk,
                names,
                target_layer=layer,
                class_idx=args.class_idx,
                topk=args.topk,
                batch_size=args.batch_size,
                progress=None if not args.quiet else False,
                **options,
            )
        )
        bar.update(len(chunk))
    bar.close()
    return loaded, files, names, results


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


def _print_predictions(files: Sequence[Path], results: Sequence[Explanation], k: int = 3) -> None:
    rows = [top for result in results for top in result.top(k)]
    for file, top in zip(files, rows, strict=True):
        shown = ", ".join(f"{name} ({index}) {p:.1%}" for index, name, p in top)
        print(f"{file.name}: {shown}")


def _explain(args: argparse.Namespace) -> int:
    loaded, files, names, results = _run(args, "gradcam")
    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    offset = 0
    for result in results:
        for i in range(result.classes.shape[0]):
            stem = files[offset + i].stem
            for rank, cls in enumerate(result.classes[i].tolist()):
                for name in names:
                    base = args.out / f"{stem}_{name}_{cls}"
                    overlay = result.overlay(name, sample=i, rank=rank, colormap=args.colormap, alpha=args.alpha)
                    overlay.save(base.with_suffix(".png"))
                    np.save(base.with_suffix(".npy"), result.maps[name][i, rank].detach().float().cpu().numpy())
                    written += 1
            if len(names) > 1:  # one figure with every method side by side
                assert result.images is not None
                label = ", ".join(result.label(c) for c in result.classes[i].tolist()[:1])
                figure = grid(
                    [result.images[i]],
                    {name: [result.maps[name][i, 0]] for name in names},
                    colormap=args.colormap,
                    alpha=args.alpha,
                    row_labels=[label],
                )
                figure.save(args.out / f"{stem}_grid.png")
        offset += result.classes.shape[0]
    _print_predictions(files, results)
    plural = "s" if written != 1 else ""
    print(
        f"wrote {written} overlay{plural} (.png) and raw map{plural} (.npy) to {args.out}/ [model {loaded.name}, "
        f"layer(s) {', '.join(sorted({n for r in results for v in r.layers.values() for n in v[:1]}))}]"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from camkit.viz.report import ReportRow, write_report

    loaded, files, names, results = _run(args, "all")
    if args.metrics_steps < 0:
        raise UserError(f"--metrics-steps must be 0 (no metrics) or more, got {args.metrics_steps}")
    rows = []
    offset = 0
    for result in results:
        assert result.images is not None
        scores = _faithfulness(loaded, result, names, args) if args.metrics_steps else None
        for i, image in enumerate(result.images):
            rows.append(
                ReportRow(
                    title=files[offset + i].name,
                    image=image,
                    predictions=[(name, p) for _, name, p in result.top(3)[i]],
                    maps={name: result.maps[name][i, 0] for name in names},
                    metrics={} if scores is None else scores[i],
                )
            )
        offset += len(result.images)
    subtitle = f"model {loaded.name}; explained class: " + ("top-1" if args.class_idx is None else str(args.class_idx))
    path = write_report(args.out, rows, subtitle=subtitle, colormap=args.colormap, alpha=args.alpha)
    _print_predictions(files, results)
    print(f"wrote {path} ({len(rows)} images x {len(names)} methods)")
    return 0


def _faithfulness(
    loaded: LoadedModel, result: Explanation, names: Sequence[str], args: argparse.Namespace
) -> list[dict[str, dict[str, float]]]:
    """Per image and method: average drop, increase, deletion and insertion AUC of the explained class."""
    from camkit.metrics import confidence_change, deletion, insertion

    assert result.images is not None
    device = next(iter(loaded.model.parameters())).device
    x = torch.stack([loaded.preprocess.to_tensor(view) for view in result.images]).to(device)
    classes = result.classes[:, 0].tolist()
    per_image: list[dict[str, dict[str, float]]] = [{} for _ in classes]
    options = {"steps": args.metrics_steps, "batch_size": args.batch_size}
    for name in names:
        maps = result.maps[name][:, 0]
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
    return per_image


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
    from camkit.engine import candidate_layers

    loaded = _load(args)
    size = args.input_size or loaded.preprocess.crop
    shapes = candidate_layers(loaded.model, (3, size, size))
    seen = set()
    print(f"{'layer':<40} output shape   [model {loaded.name}, input 3x{size}x{size}]")
    for name, shape in shapes:
        if name in seen or (len(shape) < 3 and not args.all):
            continue
        seen.add(name)
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
            return _explain(args)
        if args.command == "run":
            return run_command(args)
        if args.command == "export":
            return export_command(args)
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
