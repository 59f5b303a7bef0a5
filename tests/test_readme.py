"""Every code block of the README runs as written (the `make` lines aside: CI runs those)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```(python|bash)\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
PYTHON = [code for kind, code in BLOCKS if kind == "python"]
COMMANDS = [
    line.split("#", 1)[0].strip()
    for kind, code in BLOCKS
    if kind == "bash"
    for line in code.splitlines()
    if line.startswith("camkit ")
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder holding the bundled photos, as a clone's root does."""
    shutil.copytree(ROOT / "assets", tmp_path / "assets")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_blocks_to_run() -> None:
    assert len(PYTHON) >= 5
    assert len(COMMANDS) >= 4


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_block_runs_as_written(code: str, workdir: Path) -> None:
    import camkit

    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        for name in ("abs_gradcam",):  # a block registers a method of its own
            if name in camkit.list_methods():
                camkit.unregister(name)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.split()[1] + f"-{i}" for i, c in enumerate(COMMANDS)])
def test_command_runs_as_written(command: str, workdir: Path) -> None:
    executable = Path(sys.executable).with_name("camkit")
    argv = [str(executable), *shlex.split(command)[1:]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
