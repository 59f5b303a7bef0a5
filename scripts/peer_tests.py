"""Run a peer library's own test suite against camkit's mirror of it, and against the peer.

    python scripts/peer_tests.py torchcam /work/.mirror/frgfm+torch-cam/repo
    python scripts/peer_tests.py gradcam /work/.mirror/jacobgil+pytorch-grad-cam/repo

The second argument is a snapshot of the peer's repository: a git directory (as the `fetch` tool
leaves it) or a checkout. The script copies the peer's `tests/` (and `scripts/`, which TorchCAM's
tests import) into a temporary folder twice:

* once as they are, run against the installed peer (the baseline: a test the peer itself fails is
  left out of the score);
* once with every import of the peer rewritten to camkit's mirror (``torchcam`` ->
  ``camkit.compat.torchcam``, ``pytorch_grad_cam`` -> ``camkit.compat.gradcam``).

Both copies get the same offline edits: pretrained weights become random init, and example photos
missing from the snapshot are replaced by camkit's bundled photo.

Each test is classified as *public* or *private*: a test is private when its code (its function,
plus the module's helpers and fixtures it names, transitively) names one of the peer's own
underscore names — a ``_name`` defined in the peer's package that ``torch.nn.Module`` does not
also have — except the ones the peer documents for users (``_utils.locate_candidate_layer``). The
score is the share of public tests that pass against the peer and also pass against the mirror.
Nothing here is run by ``make test``: the peers' test suites are not shipped with the packages.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "chelsea.png"


@dataclass(frozen=True)
class Peer:
    package: str  # import name of the peer
    mirror: str  # camkit's mirror of it
    public_private: frozenset[str]  # underscore names the peer documents for users


PEERS = {
    "torchcam": Peer("torchcam", "camkit.compat.torchcam", frozenset({"_utils"})),
    "gradcam": Peer("pytorch_grad_cam", "camkit.compat.gradcam", frozenset()),
}

OFFLINE_EDITS = [
    (re.compile(r"weights\s*=\s*[\"']DEFAULT[\"']"), "weights=None"),
    (re.compile(r"pretrained\s*=\s*True"), "pretrained=False"),
]


def export_snapshot(snapshot: Path, dest: Path) -> None:
    """Copy tests/, scripts/, examples/ and the top-level files of a snapshot into dest."""
    wanted = ("tests/", "scripts/", "examples/")
    if (snapshot / "HEAD").is_file() and not (snapshot / ".git").exists():  # a bare git directory
        names = subprocess.run(
            ["git", "--git-dir", str(snapshot), "ls-tree", "-r", "--name-only", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        for name in names:
            if not name.startswith(wanted) and "/" in name:
                continue
            blob = subprocess.run(["git", "--git-dir", str(snapshot), "show", f"HEAD:{name}"], capture_output=True)
            if blob.returncode != 0:  # a large file the snapshot lists but does not hold
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob.stdout)
    else:
        for part in ("tests", "scripts", "examples"):
            if (snapshot / part).is_dir():
                shutil.copytree(snapshot / part, dest / part, dirs_exist_ok=True)


def missing_photos(tests: Path) -> set[str]:
    """Paths of example images the tests open that the snapshot does not hold."""
    found: set[str] = set()
    for source in tests.glob("*.py"):
        for path in re.findall(r"[\"']((?:\.\./)?examples/[\w\-./]+\.(?:png|jpg|jpeg|jfif))[\"']", source.read_text()):
            found.add(path.removeprefix("../"))
    return found


def prepare(snapshot: Path, peer: Peer, dest: Path, *, mirror: bool) -> None:
    export_snapshot(snapshot, dest)
    for name in missing_photos(dest / "tests"):
        target = dest / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(PHOTO, target)
    for folder in ("tests", "scripts"):
        for source in (dest / folder).glob("*.py") if (dest / folder).is_dir() else []:
            text = source.read_text()
            for pattern, replacement in OFFLINE_EDITS:
                text = pattern.sub(replacement, text)
            if mirror:
                text = rewrite_imports(text, peer)
            source.write_text(text)
    if (dest / "scripts").is_dir() and not (dest / "scripts" / "__init__.py").exists():
        (dest / "scripts" / "__init__.py").write_text("")


def rewrite_imports(text: str, peer: Peer) -> str:
    pkg, mirror = re.escape(peer.package), peer.mirror
    text = re.sub(rf"\bfrom {pkg}\b", f"from {mirror}", text)
    text = re.sub(rf"^(\s*)import {pkg}$", rf"\1import {mirror} as {peer.package}", text, flags=re.M)
    # the package's name inside strings: module paths ("torchcam.explain", f"torchcam.{name}") and
    # messages that quote the module ("module 'torchcam' has no attribute ...")
    text = re.sub(rf"(?<=[\"']){pkg}\.", f"{mirror}.", text)
    text = re.sub(rf"'{pkg}'(?=[^\"\n]*\")", f"'{mirror}'", text)
    return text


def run_pytest(folder: Path, label: str) -> dict[str, str]:
    """Run pytest in folder; return {test id: outcome} with outcome passed/failed/skipped."""
    report = folder / f"{label}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    cmd += ["-c", "/dev/null", "--rootdir", str(folder), f"--junitxml={report}", "tests"]
    cmd += ["--continue-on-collection-errors"]
    if not torch.cuda.is_available():
        cmd += ["--ignore-glob", "tests/*cuda*"]
    subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            outcomes[key] = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcomes[key] = "failed"
        else:
            outcomes[key] = "passed"
    return outcomes


def peer_private_names(peer: Peer) -> set[str]:
    """Underscore names the peer defines (classes, functions, attributes, modules)."""
    spec = importlib.util.find_spec(peer.package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{peer.package} is not installed: make .venv/.installed installs it")
    names: set[str] = set()
    for source in Path(next(iter(spec.submodule_search_locations))).rglob("*.py"):
        if source.stem.startswith("_") and not source.stem.startswith("__"):
            names.add(source.stem)
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
        for node in tree.body:  # module-level names; a function's locals are nobody's API
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    torch_names = set(dir(torch.nn.Module())) | set(dir(torch.Tensor))
    return {
        n for n in names if len(n) > 1 and n.startswith("_") and not n.startswith("__") and n not in torch_names
    } - peer.public_private


Definitions = dict[str, ast.AST]


def reached(node: ast.AST, top: Definitions, private: set[str], seen: set[str]) -> set[str]:
    """The private names node's code reaches, following the module's helpers and fixtures."""
    hits: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Name, ast.arg)):  # a helper called, or a fixture asked for
            ref = sub.id if isinstance(sub, ast.Name) else sub.arg
            if ref in top and ref not in seen:
                seen.add(ref)
                hits |= reached(top[ref], top, private, seen)
            continue
        if isinstance(sub, ast.Attribute):
            name = sub.attr
        elif isinstance(sub, ast.alias):
            name = sub.name.split(".")[-1]
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            name = sub.value  # monkeypatch.setattr(obj, "_name", ...)
        else:
            continue
        if name in private:
            hits.add(name)
    return hits


def private_tests(tests: Path, private: set[str]) -> dict[str, set[str]]:
    """{module::function: the private names it reaches} for every test function that reaches one."""
    shared: Definitions = {}
    if (tests / "conftest.py").exists():
        shared = definitions(ast.parse((tests / "conftest.py").read_text()))
    found: dict[str, set[str]] = {}
    for source in sorted(tests.glob("test_*.py")):
        tree = ast.parse(source.read_text())
        top = shared | definitions(tree)
        imported = set()  # module-level imports of private names count for every test
        for n in tree.body:
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                imported |= {a.name for a in n.names if a.name in private}
        for name, node in top.items():
            if name.startswith("test"):
                hits = reached(node, top, private, {name}) | imported
                if hits:
                    found[f"{source.stem}::{name}"] = hits
    return found


def definitions(tree: ast.Module) -> Definitions:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {n.name: n for n in tree.body if isinstance(n, kinds)}


def base_name(test_id: str) -> str:
    """'tests.test_x::test_y[param]' -> 'test_x::test_y'."""
    module, _, name = test_id.partition("::")
    return f"{module.split('.')[-1]}::{name.split('[')[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("snapshot", type=Path, help="the peer's repository (git dir or checkout)")
    parser.add_argument("--keep", type=Path, help="keep the two prepared copies in this folder")
    parser.add_argument("--verbose", action="store_true", help="list every public failure")
    args = parser.parse_args(argv)
    peer = PEERS[args.peer]
    work = args.keep or Path(tempfile.mkdtemp(prefix=f"peer-{args.peer}-"))
    as_is, mirrored = work / "peer", work / "mirror"
    for folder in (as_is, mirrored):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    prepare(args.snapshot, peer, as_is, mirror=False)
    prepare(args.snapshot, peer, mirrored, mirror=True)
    private = private_tests(as_is / "tests", peer_private_names(peer))
    baseline, ours = run_pytest(as_is, "peer"), run_pytest(mirrored, "mirror")

    rows: dict[str, list[int]] = {}
    failures: list[str] = []
    for test_id, outcome in sorted(baseline.items()):
        if outcome != "passed":
            continue
        kind = "private" if base_name(test_id) in private else "public"
        row = rows.setdefault(kind, [0, 0])
        row[0] += 1
        if ours.get(test_id) == "passed":
            row[1] += 1
        elif kind == "public":
            failures.append(test_id)
    print(f"{args.peer}: the peer's own tests ({len(baseline)} collected; ", end="")
    print(f"{sum(o == 'passed' for o in baseline.values())} pass against the peer itself)")
    for kind in ("public", "private"):
        total, passed = rows.get(kind, [0, 0])
        share = f"{100 * passed / total:.1f} %" if total else "-"
        print(f"  {kind:8s} {passed:4d} / {total:4d} pass through {peer.mirror}  ({share})")
    if failures:
        print(f"  public tests failing through the mirror ({len(failures)}):")
        for test_id in failures if args.verbose else failures[:20]:
            print(f"    {test_id}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
