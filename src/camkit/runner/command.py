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
import os
from pathlib import Path
from typing import Any

from camkit.models import DEFAULT_MODEL
from camkit.registry import list_methods
from camkit.runner.data import TARGET_HELP, parse_target
from camkit.runner.export import export
from camkit.runner.job import run

__all__ = ["add_parsers", "export_command", "positive_int", "run_command"]


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
    """``camkit run``: explain the folder into the store and print the summary (rank 0 only)."""
    chosen = args.method or ["gradcam"]
    layer = args.layer[0] if args.layer and len(args.layer) == 1 else args.layer
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
        **dict(args.option),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"camkit run: {report.summary()}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """``camkit export``: write the overlays of a store."""
    chosen = None if not args.method or "all" in args.method else args.method
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
