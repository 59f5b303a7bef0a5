"""Generate the docs' tables from code: the method table (registry), the target-layer table, CLI help.

Run ``python scripts/gen_docs.py`` to rewrite the generated blocks of README.md and docs/*.md;
``--check`` exits 1 when a block is stale (tests/test_docs.py runs the check).

A generated block sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch

import camkit
from camkit.engine import attention_blocks, resolve_layers
from camkit.methods.activation import resolve_fc_weight
from camkit.reshape import infer_layout, transformer_info

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Architectures of the target-layer table: (label, loader name). Random weights: only shapes matter.
ARCHITECTURES = [
    ("EfficientNet-Lite0 (camkit default)", "efficientnet_lite0"),
    ("ResNet-18 / 50, ResNeXt", "torchvision:resnet50"),
    ("DenseNet-121", "torchvision:densenet121"),
    ("VGG-16", "torchvision:vgg16"),
    ("MobileNet v2", "torchvision:mobilenet_v2"),
    ("MobileNet v3 (large)", "torchvision:mobilenet_v3_large"),
    ("EfficientNet-B0", "torchvision:efficientnet_b0"),
    ("ConvNeXt-Tiny", "torchvision:convnext_tiny"),
    ("RegNetY-400MF", "torchvision:regnet_y_400mf"),
    ("SqueezeNet 1.1", "torchvision:squeezenet1_1"),
    ("ViT-B/16 (torchvision)", "torchvision:vit_b_16"),
    ("DeiT-Tiny (timm)", "timm:deit_tiny_patch16_224"),
    ("DeiT-Tiny distilled (timm)", "timm:deit_tiny_distilled_patch16_224"),
    ("Swin-T (timm)", "timm:swin_tiny_patch4_window7_224"),
]

# Transformer families of the docs/transformers.md table (a subset of ARCHITECTURES).
TRANSFORMERS = [
    (label, name) for label, name in ARCHITECTURES if name.rsplit(":", 1)[-1].startswith(("vit", "deit", "swin"))
]


def methods_table() -> str:
    """One row per registry method: class, name, whether `scores` is needed, family, summary (all from the spec)."""
    from camkit.engine import candidate_layers
    from camkit.models import load_model

    default = load_model("efficientnet_lite0", pretrained=False)
    shape = dict(candidate_layers(default.model, (3, 224, 224)))[str(default.target_layer)]
    channels, positions = shape[1], shape[2] * shape[3]
    rows = [
        "| class | registry name | needs `scores` | family | forwards per image and class¹ | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for name in camkit.list_methods():
        spec = camkit.get_method(name)
        summary = spec.summary.split(": ", 1)[-1].rstrip(".").replace("|", "\\|")
        scores = "yes" if spec.needs_scores else "no"
        cost = "1" if spec.cost == "0" else f"1 + `{spec.cost}` = {spec.forwards(channels, positions):,}"
        rows.append(f"| `{spec.class_name}` | `{name}` | {scores} | {spec.family} | {cost} | {summary} |")
    rows.append("")
    rows.append(
        f"¹ At the default options, on the default model (EfficientNet-Lite0 at `{default.target_layer}`: "
        f"C = {channels} channels, P = {positions} positions); `camkit methods` lists the same. "
        "AblationCAM's and Recipro-CAM's forwards run only the layers after the target layer; Score-CAM and "
        "IS-CAM skip flat channels, so theirs is an upper bound. `--method fast` (the default of `camkit "
        "report`) takes the methods of cost 1; a run estimated to take over a minute prints the estimate first."
    )
    return "\n".join(rows)


def papers_table() -> str:
    """One row per registry method: its class and the paper it comes from (from the specs)."""
    rows = ["| method | class | paper |", "|---|---|---|"]
    for name in camkit.list_methods():
        spec = camkit.get_method(name)
        paper = spec.paper.replace("|", "\\|")
        rows.append(f"| `{name}` | `{spec.class_name}` | {paper} |")
    return "\n".join(rows)


def options_table() -> str:
    """One row per declared method option: method, option, default, what it does (from the specs)."""
    rows = ["| method | option | default | what it does |", "|---|---|---|---|"]
    for name in camkit.list_methods():
        spec = camkit.get_method(name)
        for key, option in spec.options.items():
            doc = option.doc.replace("|", "\\|")
            rows.append(f"| `{name}` | `{key}` | `{option.default!r}` | {doc} |")
    return "\n".join(rows)


def _output(model: torch.nn.Module, name: str, shape: tuple[int, ...]) -> str:
    """An output shape without the batch dim, and how camkit reads it when it is not channels-first."""
    text = "×".join(map(str, shape[1:]))
    layout = infer_layout(shape, (224, 224), transformer_info(model), model.get_submodule(name))
    if layout is None:
        return text
    if layout.kind == "channels_last":
        return f"{text} (channels-last {layout.height}×{layout.width})"
    return f"{text} ({layout.prefix} + {layout.height}×{layout.width} tokens)"


def target_layer_table() -> str:
    """For common architectures: camkit's automatic target layer, its output, and CAM's head."""
    rows = [
        "| architecture | automatic `target_layer` | its output at 224 px | default in `camkit.models` | CAM head |",
        "|---|---|---|---|---|",
    ]
    logging.getLogger("camkit").setLevel(logging.ERROR)
    from camkit.engine import candidate_layers
    from camkit.models import load_model

    for label, name in ARCHITECTURES:
        loaded = load_model(name, pretrained=False)
        model = loaded.model
        chosen = resolve_layers(model, None, (3, 224, 224))[0]
        shapes = dict(candidate_layers(model, (3, 224, 224)))
        try:
            resolve_fc_weight(model, None)
            head = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
            cam = f"`{head}`"
        except ValueError:
            linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
            cam = f"n/a ({linear} Linear layers)" if linear else "n/a (no Linear head)"
        default = f"`{loaded.target_layer}`" if loaded.target_layer else "automatic"
        rows.append(f"| {label} | `{chosen}` | {_output(model, chosen, shapes[chosen])} | {default} | {cam} |")
    return "\n".join(rows)


def transformer_table() -> str:
    """For transformer families: the automatic layer and its layout, and what LeGrad/rollout read."""
    rows = [
        "| architecture | automatic `target_layer` (CAM methods) | read as | the head reads | LeGrad, rollout |",
        "|---|---|---|---|---|",
    ]
    logging.getLogger("camkit").setLevel(logging.ERROR)
    from camkit.engine import candidate_layers
    from camkit.models import load_model

    for label, name in TRANSFORMERS:
        model = load_model(name, pretrained=False).model
        chosen = resolve_layers(model, None, (3, 224, 224))[0]
        shape = dict(candidate_layers(model, (3, 224, 224)))[chosen]
        layout = infer_layout(shape, (224, 224), transformer_info(model), model.get_submodule(chosen))
        if layout is None:
            read = "channels-first map"
        elif layout.kind == "channels_last":
            read = f"channels-last grid {layout.height}×{layout.width}"
        else:
            read = f"{layout.prefix} prefix + {layout.height}×{layout.width} patch tokens"
        pooling = "the mean of the patch tokens"
        info = transformer_info(model)
        if layout is not None and layout.prefix > 0 and not (info is not None and info.pools_patches):
            pooling = (
                "class + distillation tokens" if getattr(model, "dist_token", None) is not None else "the class token"
            )
        try:
            blocks = attention_blocks(model)
            attention = f"{len(blocks)} blocks, `{blocks[0][0]}` … `{blocks[-1][0]}`"
        except ValueError as exc:
            attention = "n/a (windowed attention)" if "windows" in str(exc) else "n/a"
        rows.append(f"| {label} | `{chosen}` | {read} | {pooling} | {attention} |")
    return "\n".join(rows)


def cli_help() -> str:
    """The `--help` of every `camkit` subcommand."""
    from camkit.cli import build_parser

    parser = build_parser()
    blocks = []
    for command in ("explain", "report", "sanity", "run", "export", "methods", "layers"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            parser.parse_args([command, "--help"])
        blocks.append(f"### `camkit {command}`\n\n```text\n{out.getvalue().rstrip()}\n```")
    return "\n\n".join(blocks)


GENERATORS: dict[str, Callable[[], str]] = {
    "methods": methods_table,
    "options": options_table,
    "papers": papers_table,
    "target-layers": target_layer_table,
    "transformers": transformer_table,
    "cli": cli_help,
}
BLOCK = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.DOTALL)


def render(text: str, cache: dict[str, str]) -> str:
    """``text`` with every generated block rewritten."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in cache:
            cache[name] = GENERATORS[name]()
        return f"{match.group(1)}{cache[name]}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def stale_files() -> list[Path]:
    """The files whose generated blocks differ from what the code gives now."""
    cache: dict[str, str] = {}
    return [path for path in FILES if path.exists() and render(path.read_text(), cache) != path.read_text()]


def main() -> int:
    """Rewrite (or with --check, verify) every generated block."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated block is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale generated block in {path.relative_to(ROOT)}: run python scripts/gen_docs.py")
        return 1 if stale else 0
    cache: dict[str, str] = {}
    for path in FILES:
        if path.exists():
            text = path.read_text()
            new = render(text, cache)
            if new != text:
                path.write_text(new)
                print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
