"""What ``camkit.explain`` costs against the floor, with one method and with several sharing a forward.

The offline pretrained EfficientNet-Lite0 (``bn2``) or another model of the latency suite, seeded
random inputs (as ``benchmarks/latency.py``), batch 1 and 8. Cases, timed in alternation in one
process (every round times each case once, best of ``--inner`` calls, in a new random order):

* floor: a forward with no graph before the target layer + the gradient of the score w.r.t. it;
* ``explain`` with Grad-CAM alone;
* ``explain`` with Grad-CAM, Grad-CAM++, LayerCAM and EigenCAM (one call: they share one forward);
* the same four methods in four ``explain`` calls (one forward each: what sharing saves).

A ratio is the median over rounds of ``t_case / t_floor`` in the same round, with its interquartile
range. ``explain`` also resizes every map to the input and min-max normalizes it, which the floor does
not. The forwards each case runs are counted with a pre-hook on the model: that count does not
depend on the machine's load.

Usage::

    .venv/bin/python benchmarks/explain_cost.py                    # ~2 min on 2 cores
    .venv/bin/python benchmarks/explain_cost.py --model resnet18 --rounds 20
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

import camkit
from benchcases import MODELS, Env, build_model, floor_lean, make_env

FOUR = ("gradcam", "gradcampp", "layercam", "eigencam")
Call = Callable[[], object]


def cases(model: nn.Module, env: Env) -> dict[str, Call]:
    """The timed calls; the floor runs on its own copy of the model (its hook stays on it)."""
    floor = floor_lean(build_model(env.spec, env.x.device), env)
    layer = env.spec.layer

    def explain(methods: Sequence[str]) -> Call:
        return lambda: camkit.explain(model, env.x, list(methods), target_layer=layer)

    def one_by_one() -> object:
        return [camkit.explain(model, env.x, name, target_layer=layer) for name in FOUR]

    return {
        "floor": floor,
        "explain: Grad-CAM": explain(["gradcam"]),
        "explain: 4 methods in one call": explain(FOUR),
        "explain: the 4 methods one call each": one_by_one,
    }


def count_forwards(model: nn.Module, call: Call) -> int:
    """How many times ``call`` runs the model (a pre-hook counts the top-level forwards)."""
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, _a: seen.append(1))
    try:
        call()
    finally:
        handle.remove()
    return len(seen)


def measure(calls: dict[str, Call], rounds: int, inner: int, seed: int = 0) -> dict[str, list[float]]:
    """Per case, ``t_case / t_floor`` of every round (the floor is timed in the same round)."""
    for call in calls.values():  # warm-up
        call()
    rng = random.Random(seed)
    ratios: dict[str, list[float]] = {label: [] for label in calls if label != "floor"}
    for _ in range(rounds):
        times = {}
        for label in rng.sample(list(calls), len(calls)):
            best = float("inf")
            for _ in range(inner):
                start = time.perf_counter()
                calls[label]()
                best = min(best, time.perf_counter() - start)
            times[label] = best
        for label in ratios:
            ratios[label].append(times[label] / times["floor"])
    return ratios


def summary(values: Sequence[float]) -> str:
    """``median (q1-q3)`` of the ratios."""
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"{median:.2f} ({q1:.2f}-{q3:.2f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--inner", type=int, default=3, help="calls per sample (the best counts)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    print(f"# camkit.explain × floor: {spec.title}, `{spec.layer}`\n")
    print(f"- command: `{shlex.join([os.path.basename(sys.executable), *sys.argv])}`")
    print(f"- torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} logical cores, CPU")
    print(f"- {args.rounds} interleaved rounds, best of {args.inner} calls per sample; ratio: median (IQR)\n")
    print("| batch | case | forwards | × floor |")
    print("|---:|:---|---:|---:|")
    for batch in args.batch:
        model = build_model(spec, torch.device("cpu"))
        env = make_env(spec, batch, torch.device("cpu"))
        calls = cases(model, env)
        ratios = measure(calls, args.rounds, args.inner)
        for label, values in ratios.items():
            print(f"| {batch} | {label} | {count_forwards(model, calls[label])} | {summary(values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
