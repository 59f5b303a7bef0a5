"""``camkit sanity`` and the sanity column of ``camkit report``: the command-line side of the checks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from camkit.explanation import Explanation, open_image
from camkit.models import LoadedModel
from camkit.sanity._checks import (
    DEFAULT_THRESHOLD,
    MODES,
    ModelRandomization,
    below,
    methods_for_cli,
    model_randomization,
)
from camkit.viz.report import SanityCell

__all__ = ["REPORT_NOTE", "add_arguments", "cell", "check_arguments", "overall", "report_cells", "sanity_command"]

#: what the report's sanity column means (a line under its summary table)
REPORT_NOTE = (
    "sanity: each method's map of the fully randomised model (cascading model-parameter randomisation, Adebayo "
    f"et al. 2018) compared with its map of the trained model; ρ Spearman rank correlation, SSIM, HOG Pearson "
    f"correlation; pass: |similarity| < {DEFAULT_THRESHOLD} by every measure (the map depends on the learned "
    "parameters). See docs/sanity.md."
)

#: the short names of the measures in tables and the report
SHORT = {"spearman": "ρ", "ssim": "SSIM", "hog_pearson": "HOG"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``camkit sanity`` arguments of its own (the model, layer and option arguments are the CLI's)."""
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    methods = methods_for_cli()
    parser.add_argument(
        "--method",
        action="append",
        choices=methods,
        metavar="METHOD",
        help="method to check, repeatable (default: gradcam); one of: "
        f"{', '.join(methods)} (edges: a Sobel edge map of the input, a baseline that ignores the model "
        "and fails the check)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="cascading",
        help="cascading: randomise the layers from the top down, keeping the earlier ones random (Adebayo "
        "et al.'s test); independent: one layer at a time (default: cascading)",
    )
    parser.add_argument("--class", dest="class_idx", type=int, help="class index to explain (default: the top class)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"a method passes when |similarity| < THRESHOLD by every measure (default: {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="inputs per forward of perturbation methods (default: 8 on a CPU, 32 on a GPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("camkit-sanity"),
        help="output folder: a figure per image and sanity.json (default: camkit-sanity)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """The checks before the model loads.

    Raises:
        ValueError: for a bad number or output folder.
    """
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 < args.threshold <= 1:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {str(args.out)!r} is a file: pass a folder")


def _inputs(loaded: LoadedModel, files: Sequence[tuple[Path, str]]) -> tuple[Tensor, list[tuple[Path, str]], int]:
    """The readable images as one batch, their (path, output base), and how many were skipped."""
    tensors, kept, skipped = [], [], 0
    for path, base in files:
        try:
            image: Image.Image = open_image(path)
            tensors.append(loaded.preprocess(image))
        except (OSError, ValueError) as error:
            print(f"camkit: skipped {path}: {str(error).splitlines()[0]}", file=sys.stderr)
            skipped += 1
            continue
        kept.append((path, base))
    if not tensors:
        raise ValueError("none of the images could be read: pass image files that open in an image viewer")
    device = next(iter(loaded.model.parameters())).device
    return torch.stack(tensors).to(device), kept, skipped


def _about(result: ModelRandomization, loaded: LoadedModel, kept: Sequence[tuple[Path, str]]) -> dict[str, Any]:
    return {
        "model": loaded.name,
        "mode": result.mode,
        "threshold": result.threshold,
        "layers": result.layers,
        "methods": {
            name: {"passed": result.passed[name], "similarity": result.scores[name]} for name in result.methods
        },
        "images": [
            {
                "image": str(path),
                "class": int(result.classes[i]),
                "similarity": {
                    name: {m: [round(float(v), 6) for v in values[:, i, j]] for m, values in result.similarity.items()}
                    for j, name in enumerate(result.methods)
                },
            }
            for i, (path, _) in enumerate(kept)
        ],
    }


def sanity_command(args: argparse.Namespace, loaded: LoadedModel, files: Sequence[tuple[Path, str]]) -> int:
    """Run ``camkit sanity``: the model-randomisation check, its table, a figure per image and ``sanity.json``.

    Args:
        args: the parsed command line.
        loaded: the model.
        files: per image, its path and its output base (relative to ``--out``, without suffix).

    Returns:
        The exit code: 0, or 1 when an image was skipped (the check's verdict does not change it).
    """
    x, kept, skipped = _inputs(loaded, files)
    layer = args.layer[0] if args.layer and len(args.layer) == 1 else args.layer
    options = dict(args.option)
    result = model_randomization(
        loaded,
        x,
        args.method or ["gradcam"],
        layer,
        args.class_idx,
        mode=args.mode,
        threshold=args.threshold,
        batch_size=args.batch_size,
        progress=False if args.quiet else None,
        **options,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    figures = []
    for i, (_, base) in enumerate(kept):
        path = args.out / f"{base}_sanity_{args.mode}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        result.figure(sample=i).save(path)
        figures.append(path)
    document = args.out / "sanity.json"
    document.write_text(json.dumps(_about(result, loaded, kept), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    rule = "at full randomisation" if args.mode == "cascading" else "at the layer where it is closest to 0"
    print(
        f"model {loaded.name}, {args.mode} randomisation of {len(result.layers)} layers (top first: "
        f"{', '.join(result.layers[:3])}, ...), {len(kept)} image(s); similarity to the trained model's maps "
        f"{rule}, mean over images; pass: |similarity| < {args.threshold:g} by every measure"
    )
    print(result.table())
    print(f"wrote {len(figures)} figure(s) (.png) and {document.name} to {args.out}/")
    return 1 if skipped else 0


def report_cells(
    loaded: LoadedModel,
    result: Explanation,
    names: Sequence[str],
    layer: Any,
    batch_size: int,
    options: dict[str, Any],
) -> list[list[dict[str, SanityCell]]]:
    """The sanity column of ``camkit report --sanity``: per explained class (rank) and image, method → its cell.

    Each rank's classes get a cascading model-randomisation check of the explained images; a cell
    holds the similarity of the fully randomised model's map and the pass rule on that image.
    """
    assert result.images is not None
    device = next(iter(loaded.model.parameters())).device
    x = torch.stack([loaded.preprocess.to_tensor(view) for view in result.images]).to(device)
    per_rank = []
    for rank in range(result.classes.shape[1]):
        check = model_randomization(
            loaded,
            x,
            list(names),
            layer,
            result.classes[:, rank],
            batch_size=batch_size,
            progress=False,
            keep_maps=False,
            **options,
        )
        per_rank.append(
            [
                {
                    name: cell({m: float(v[-1, i, j]) for m, v in check.similarity.items()}, check.threshold)
                    for j, name in enumerate(check.methods)
                }
                for i in range(x.shape[0])
            ]
        )
    return per_rank


def cell(values: dict[str, float], threshold: float) -> SanityCell:
    """The report cell of one method's similarities (measure → value) under the pass rule."""
    named = {SHORT.get(m, m): v for m, v in values.items()}
    return SanityCell(below(values, threshold), named)


def overall(
    per_image: Sequence[Mapping[str, SanityCell]], threshold: float = DEFAULT_THRESHOLD
) -> dict[str, SanityCell]:
    """The report's summary verdict: per method, the mean similarity over the images, under the pass rule."""
    methods = list(dict.fromkeys(name for row in per_image for name in row))
    result = {}
    for name in methods:
        rows = [row[name] for row in per_image if name in row]
        measures = list(rows[0].similarity)
        mean = {m: sum(r.similarity[m] for r in rows) / len(rows) for m in measures}
        result[name] = SanityCell(below(mean, threshold), mean)
    return result
