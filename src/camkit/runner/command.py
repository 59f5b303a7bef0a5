"""The ``camkit run`` and ``camkit export`` subcommands: their arguments and what they do.

``camkit.cli`` adds these parsers and calls :func:`run_command` / :func:`export_command`; errors
are raised as ``ValueError``/``FileNotFoundError`` and printed by the CLI as one line (exit 1);
malformed arguments are argparse errors (exit 2).

Example:
    >>> positive_int("3")
    3
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
from pathlib import Path
from typing import Any

from camkit.models import DEFAULT_MODEL
from camkit.registry import list_methods
from camkit.runner.data import TARGET_HELP, parse_target
from camkit.runner.export import check_out, export
from camkit.runner.job import run
from camkit.runner.sanity import SANITY_IMAGES
from camkit.runner.scores import METRICS
from camkit.sanity._checks import MODES

__all__ = [
    "add_parsers",
    "check_colormap",
    "export_command",
    "layer_message",
    "positive_int",
    "run_command",
]

#: colormaps named when ``--colormap`` is unknown and none is close to it
_SUGGESTED_COLORMAPS = ("jet", "gray", "viridis", "inferno", "turbo")


def check_colormap(name: str, flag: str = "--colormap") -> str:
    """``name`` if it is a known colormap, else a one-line ``ValueError`` with the closest names.

    Example:
        >>> check_colormap("jet")
        'jet'
        >>> check_colormap("jte")
        Traceback (most recent call last):
        ...
        ValueError: --colormap 'jte' is not a known colormap; did you mean 'jet'? (all: camkit.viz.list_colormaps())
    """
    from camkit.viz import get_colormap, list_colormaps

    try:
        get_colormap(name)
    except (TypeError, ValueError):
        known = list_colormaps()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"try {', '.join(c for c in _SUGGESTED_COLORMAPS if c in known)}"
        )
        raise ValueError(
            f"{flag} {name!r} is not a known colormap; {hint} (all: camkit.viz.list_colormaps())"
        ) from None
    return name


def layer_message(error: Exception, model: str, no_pretrained: bool = False) -> str:
    """The API's unknown-layer message for the command line: ``--layer``, its suggestions, and ``camkit layers``.

    The suggestions (the names close to what was typed) are kept; the API's Python hint is replaced
    by the command that lists the model's layers.

    Example:
        >>> layer_message(ValueError("target_layer 'bn3' is not a submodule name of X; did you mean 'bn2'? "
        ...     "(list them with `[n for n, _ in model.named_modules()]`)"), "mine")
        "--layer 'bn3' is not a submodule name of X; did you mean 'bn2'? List them with: camkit layers --model mine"
    """
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = text.split(" (list them with", 1)[0].rstrip()
    if text.startswith("target_layer "):
        text = "--layer " + text.removeprefix("target_layer ")
    command = f"camkit layers --model {model}" + (" --no-pretrained" if no_pretrained else "")
    return f"{text}{' L' if text.endswith('?') else '; l'}ist them with: {command}"


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _workers(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0 decodes in the main process), got {text!r}")
    return int(text)


def _target(text: str) -> str:
    try:
        parse_target(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {TARGET_HELP} (e.g. topk:5, class:281), got {text!r}") from None
    return text


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def option_pair(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--option``: the value as a Python literal (``8``, ``0.5``, ``None``), else as text.

    Raises:
        argparse.ArgumentTypeError: without ``=`` or a name.
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. num_samples=8), got {text!r}")
    try:
        parsed: Any = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return name.strip(), parsed


def add_option_argument(parser: argparse.ArgumentParser) -> None:
    """``--option NAME=VALUE``, repeatable: a method option (docs/methods.md, Options)."""
    parser.add_argument(
        "--option",
        action="append",
        type=option_pair,
        default=[],
        metavar="NAME=VALUE",
        help="a method option, repeatable (e.g. --option num_samples=8); see `camkit methods` and docs/methods.md",
    )


def _method_argument(parser: argparse.ArgumentParser, default: str) -> None:
    choices = [*list_methods(), "all"]
    parser.add_argument(
        "--method",
        action="append",
        choices=choices,
        metavar="METHOD",
        help=f"CAM method, repeatable (default: {default}); one of: {', '.join(choices)}",
    )


def add_parsers(sub: Any) -> None:
    """Add the ``run`` and ``export`` subcommands to the CLI's subparsers."""
    runner = sub.add_parser(
        "run", help="explain every image of a folder into a store (resumable; many processes under torchrun)"
    )
    runner.add_argument("source", type=Path, help="a folder of images: ImageFolder layout (sub-folder = label) or flat")
    runner.add_argument("--out", type=Path, required=True, help="the store folder (created, or resumed)")
    _method_argument(runner, "gradcam")
    runner.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model name: {DEFAULT_MODEL} (default, pretrained, offline), torchvision:ARCH or timm:ARCH",
    )
    runner.add_argument("--checkpoint", type=Path, help="a state dict file for --model's architecture")
    runner.add_argument("--no-pretrained", action="store_true", help="random weights, seeded (no local weights needed)")
    runner.add_argument("--layer", action="append", help="target layer name, repeatable (default: the model's)")
    runner.add_argument(
        "--target", type=_target, default="pred", help=f"class to explain: {TARGET_HELP} (default: pred)"
    )
    runner.add_argument(
        "--batch-size", type=positive_int, default=None, help="images per forward (default: 8 on a CPU, 64 on a GPU)"
    )
    runner.add_argument(
        "--workers", type=_workers, default=None, help="decoding processes (default: about half the cores; 0: none)"
    )
    runner.add_argument(
        "--dtype", choices=("float32", "float16"), default="float32", help="maps in the store (default: float32)"
    )
    runner.add_argument(
        "--device", default="auto", help="auto (cuda:LOCAL_RANK when CUDA is available, else cpu), cpu, cuda, cuda:1"
    )
    runner.add_argument("--overwrite", action="store_true", help="replace a store made with other options")
    runner.add_argument("--retry-failed", action="store_true", help="compute images that failed before again")
    runner.add_argument("--quiet", action="store_true", help="no progress line")
    runner.add_argument(
        "--metric",
        action="append",
        choices=list(METRICS),
        default=[],
        metavar="METRIC",
        help="store a per-image metric of each method's map, repeatable, for `camkit view` to show and sort by: "
        + ", ".join(f"{name} ({better} is better)" for name, better in METRICS.items())
        + " (extra forwards per method: 1 for drop/increase, 16 for deletion or insertion)",
    )
    runner.add_argument(
        "--layer-maps",
        action="store_true",
        help="also store each target layer's map on its own (a layer switch in camkit view; one more forward and "
        "backward per layer)",
    )
    runner.add_argument(
        "--sanity",
        action="store_true",
        help="also run the model-randomisation sanity check of each method on the first --sanity-images images "
        "and store the verdicts, which camkit view shows next to the method names (one forward and backward "
        "per randomised layer group; docs/sanity.md)",
    )
    runner.add_argument(
        "--sanity-images",
        type=positive_int,
        default=SANITY_IMAGES,
        metavar="N",
        help=f"with --sanity: how many images the check reads (default: {SANITY_IMAGES})",
    )
    runner.add_argument(
        "--sanity-mode",
        choices=MODES,
        default="cascading",
        help="with --sanity: cascading (Adebayo et al.'s test) or independent randomisation (default: cascading)",
    )
    add_option_argument(runner)
    exporter = sub.add_parser("export", help="write overlay PNGs for the records of a store")
    exporter.add_argument("store", type=Path, help="a store written by camkit run")
    exporter.add_argument("--out", type=Path, required=True, help="output folder")
    _method_argument(exporter, "every method in the store")
    exporter.add_argument("--source", type=Path, help="the images' folder, if it moved since the run")
    exporter.add_argument("--colormap", default="jet", help="overlay colormap (default: jet)")
    exporter.add_argument("--alpha", type=_alpha, default=0.5, help="weight of the image in the overlay (default: 0.5)")
    exporter.add_argument("--quiet", action="store_true", help="no progress line")


def run_command(args: argparse.Namespace) -> int:
    """``camkit run``: explain the folder into the store and print the summary (rank 0 only).

    The store path and the device are checked before the model loads; an unknown ``--layer`` is
    reported with the names close to it and the ``camkit layers`` command.
    """
    chosen = args.method or ["gradcam"]
    layer = args.layer[0] if args.layer and len(args.layer) == 1 else args.layer
    check_out(args.out, name="--out")
    try:
        report = run(
            args.source,
            args.out,
            methods="all" if "all" in chosen else chosen,
            model=args.model,
            checkpoint=args.checkpoint,
            pretrained=not args.no_pretrained,
            layer=layer,
            target=args.target,
            batch_size=args.batch_size,
            workers=args.workers,
            dtype=args.dtype,
            device=None if args.device == "auto" else args.device,
            overwrite=args.overwrite,
            retry_failed=args.retry_failed,
            progress=False if args.quiet else None,
            metrics=args.metric,
            layer_maps=args.layer_maps,
            sanity=args.sanity,
            sanity_images=args.sanity_images,
            sanity_mode=args.sanity_mode,
            **dict(args.option),
        )
    except ValueError as error:
        if not str(error).startswith("target_layer "):
            raise
        raise ValueError(layer_message(error, args.model, args.no_pretrained or args.checkpoint is not None)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"camkit run: {report.summary()}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """``camkit export``: write the overlays of a store (the output folder and colormap checked first)."""
    chosen = None if not args.method or "all" in args.method else args.method
    check_out(args.out, name="--out")
    check_colormap(args.colormap)
    count = export(
        args.store,
        args.out,
        chosen,
        source=args.source,
        colormap=args.colormap,
        alpha=args.alpha,
        progress=False if args.quiet else None,
    )
    print(f"wrote {count} overlays (.png) to {args.out}/")
    return 0
