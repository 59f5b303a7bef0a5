"""Throughput of `camkit run` (1 and 2 processes) against a plain Python loop over pytorch-grad-cam.

All cases explain the same images with Grad-CAM on the same model: the offline pretrained
EfficientNet-Lite0 (camkit's default), target layer ``bn2``, top-1 class, 224 px input.

* **pytorch-grad-cam loop** (the peers' way, one image at a time, as its users do): for each file,
  ``Image.open`` + the same resize/crop/normalize as camkit, then
  ``GradCAM(model=m, target_layers=[m.bn2])(input_tensor=x, targets=None)``; the maps stay in a
  list (nothing is written).
* **camkit run, 1 process**: ``camkit.run(folder, store, "gradcam", model=loaded)`` into a new store
  with the default DataLoader workers (decoding beside the model) and batch size (8 on a CPU).
* **camkit run, 2 processes**: the same call in two processes (``torch.multiprocessing`` with a
  ``gloo`` process group on this machine, as ``torchrun --nproc_per_node=2`` gives), each process
  with ``cores / 2`` torch threads, each writing its own part of the store.

The images are ``--images`` (default 128) random crops of the four bundled photos in ``assets/``,
resized to a shorter side of 320 to 400 px and saved as JPEG (quality 90) in a temporary folder.
Each case runs ``--rounds`` times (default 3) in alternation; a case's images/s is the median
over rounds of ``images / wall time of the call`` (for camkit: the whole ``camkit.run`` call,
store creation and worker start-up included; model loading and imports excluded for every case),
and its ratio is the median over rounds of its images/s over the loop's in the same round.

On a GPU (``--device cuda``) the device is named and the loop runs on it too. Usage::

    python benchmarks/runner.py                  # 128 images, 3 rounds, CPU
    python benchmarks/runner.py --images 256 --rounds 5
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import copy
import multiprocessing
import platform
import random
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import camkit
from camkit.models import LoadedModel, load_default

ASSETS = Path(__file__).resolve().parents[1] / "assets"
GOAL = 3.0  # camkit run at one process: at least this many times the loop's images/s
LOOP = "pytorch-grad-cam loop (1 image at a time)"
ONE = "camkit run, 1 process"
TWO = "camkit run, 2 processes"


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEG crops of the bundled photos (shorter side 320-400 px)."""
    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(ASSETS.glob("*")) if p.suffix in (".png", ".jpg")]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        scale = rng.uniform(0.6, 1.0)
        w, h = int(width * scale), int(height * scale)
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        crop = photo.crop((left, top, left + w, top + h))
        short = rng.randint(320, 400)
        factor = short / min(w, h)
        crop = crop.resize((round(w * factor), round(h * factor)), Image.Resampling.BILINEAR)
        file = folder / f"{i:04d}.jpg"
        crop.save(file, quality=90)
        files.append(file)
    return files


def gradcam_loop(loaded: LoadedModel, files: list[Path], device: torch.device) -> float:
    """Seconds for pytorch-grad-cam's GradCAM over the files, one image per call."""
    from pytorch_grad_cam import GradCAM

    model = copy.deepcopy(loaded.model).to(device)
    maps = []
    with GradCAM(model=model, target_layers=[model.bn2]) as cam:
        start = time.perf_counter()
        for file in files:
            with Image.open(file) as image:
                x = loaded.preprocess(image.convert("RGB")).unsqueeze(0).to(device)
            maps.append(cam(input_tensor=x, targets=None))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    assert len(maps) == len(files)
    return seconds


def camkit_one(loaded: LoadedModel, folder: Path, store: Path, batch: int | None, device: torch.device) -> float:
    """Seconds for one ``camkit.run`` call in this process."""
    start = time.perf_counter()
    report = camkit.run(folder, store, "gradcam", model=loaded, batch_size=batch, device=device, progress=False)
    seconds = time.perf_counter() - start
    assert report.computed == len(list(folder.glob("*.jpg"))), report.summary()
    return seconds


def _worker(
    rank: int, world: int, port: int, folder: str, store: str, batch: int | None, threads: int, queue: Any
) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "LOCAL_WORLD_SIZE": str(world)})
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(threads)
    # A process started by torchrun has fork as its default start method (DataLoader workers start in
    # milliseconds); one started by multiprocessing's spawn would spawn them too (seconds: fresh imports).
    multiprocessing.set_start_method("fork", force=True)
    loaded = load_default()
    dist.init_process_group("gloo", rank=rank, world_size=world)
    dist.barrier()  # every rank has its model: the clock starts together
    start = time.perf_counter()
    report = camkit.run(folder, store, "gradcam", model=loaded, batch_size=batch, progress=False)
    seconds = time.perf_counter() - start
    dist.destroy_process_group()
    if rank == 0:
        queue.put((seconds, report.computed))


def camkit_two(folder: Path, store: Path, batch: int | None, threads: int) -> float:
    """Seconds of the ``camkit.run`` call on rank 0 of two processes (it returns after both finish)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(
        _worker, args=(2, port, str(folder), str(store), batch, threads, queue), nprocs=2, start_method="spawn"
    )
    seconds, computed = queue.get()
    assert computed == len(list(folder.glob("*.jpg")))
    return float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: camkit run's (8 on a CPU, 64 on a GPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the 1-process cases")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    loaded = load_default()
    work = Path(tempfile.mkdtemp(prefix="camkit-bench-"))
    try:
        files = make_images(work / "images", args.images)
        rates: dict[str, list[float]] = {LOOP: [], ONE: [], TWO: []}
        ratios: dict[str, list[float]] = {ONE: [], TWO: []}
        for round_ in range(args.rounds):
            loop = args.images / gradcam_loop(loaded, files, device)
            one = args.images / camkit_one(loaded, work / "images", work / f"store1-{round_}", args.batch_size, device)
            rates[LOOP].append(loop)
            rates[ONE].append(one)
            ratios[ONE].append(one / loop)
            if device.type == "cpu":
                threads = max(1, args.threads // 2)
                two = args.images / camkit_two(work / "images", work / f"store2-{round_}", args.batch_size, threads)
                rates[TWO].append(two)
                ratios[TWO].append(two / loop)
            print(
                f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in rates.items() if v)
            )
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
        print(
            f"\nEfficientNet-Lite0 (pretrained, offline), Grad-CAM at bn2, {args.images} JPEG images, camkit batch "
            f"{args.batch_size or 'default'}, {args.threads} torch thread(s) for the 1-process cases, {name}, "
            f"{platform.machine()}, torch {torch.__version__}, {args.rounds} rounds\n"
        )
        print("| case | images/s (median) | × the pytorch-grad-cam loop |")
        print("|:---|---:|---:|")
        for case, values in rates.items():
            if not values:
                continue
            ratio = "1.00" if case == LOOP else f"{statistics.median(ratios[case]):.2f}"
            print(f"| {case} | {statistics.median(values):.1f} | {ratio} |")
        speedup = statistics.median(ratios[ONE])
        low, high = min(ratios[ONE]), max(ratios[ONE])
        verdict = "PASS" if low >= GOAL else ("FAIL" if high < GOAL else "INCONCLUSIVE")
        print(
            f"\n- camkit run (1 process) vs the loop: {speedup:.2f}x (rounds {low:.2f}-{high:.2f}), goal >= {GOAL}x: "
            f"**{verdict}**"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
