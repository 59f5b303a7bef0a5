"""The README's method table is the registry."""

from __future__ import annotations

import re
from pathlib import Path

import camkit

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_method_table_matches_registry() -> None:
    names = re.findall(r"^\| `\w+` \| `(\w+)` \|", README.read_text(), flags=re.MULTILINE)
    assert sorted(names) == camkit.list_methods()


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert text.index("make demo") < text.index("make test") < text.index("## ")


def test_every_registry_method_has_its_class_in_camkit_methods() -> None:
    import camkit.methods

    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", README.read_text(), flags=re.MULTILINE)
    for class_name, registry_name in rows:
        assert getattr(camkit.methods, class_name).method == registry_name


def _gen_docs():
    import importlib.util

    path = README.parent / "scripts" / "gen_docs.py"
    spec = importlib.util.spec_from_file_location("gen_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_doc_blocks_are_current() -> None:
    stale = _gen_docs().stale_files()
    assert not stale, f"run `python scripts/gen_docs.py`: stale generated blocks in {stale}"


def test_mkdocs_site_builds_offline(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    import pytest

    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists() and shutil.which("mkdocs") is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]' (make test installs it)")
    command = [str(mkdocs if mkdocs.exists() else "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(command, cwd=README.parent, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "site" / "methods" / "index.html").read_text()
    assert all(f"<code>{name}</code>" in page for name in camkit.list_methods())
