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
