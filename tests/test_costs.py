"""Each method's cost comes from its spec: `camkit methods`, the docs table, `--method fast`, the long-run warning."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

import camkit
from camkit import cli
from camkit.registry import MethodContext

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def test_forwards_follow_the_options() -> None:
    score = camkit.get_method("scorecam")
    assert score.forwards(1280, 49) == 1281
    assert score.forwards(1280, 49, {"max_channels": 64}) == 65
    assert camkit.get_method("sscam").forwards(512, 49, {"num_samples": 2}) == 1 + 1024
    assert camkit.get_method("iscam").forwards(512, 49) == 1 + 512 * 9 + 1  # one zero input, not C of them
    assert camkit.get_method("reciprocam").forwards(512, 49) == 50
    assert camkit.get_method("smoothgradcampp").forwards(512, 49, {"num_samples": 8}) == 9
    assert all(camkit.get_method(m).forwards(512, 49) == 1 for m in cli.fast_methods())


def test_counted_forwards_match_the_cost() -> None:
    """The cost is what the engine runs: count the model's forwards for each perturbation method."""
    from conftest import tiny_cnn

    model, x = tiny_cnn().eval(), torch.rand(1, 3, 8, 8)  # layer "3": C = 8 channels, P = 64 positions
    calls = {"n": 0}
    model.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    cases = [
        ("scorecam", {}),
        ("scorecam", {"max_channels": 3}),
        ("iscam", {"num_samples": 3}),
        ("smoothgradcampp", {}),
    ]
    for name, options in cases:
        calls["n"] = 0
        camkit.compare(model, x, [name], "3", class_idx=0, batch_size=1, **options)
        assert calls["n"] == camkit.get_method(name).forwards(8, 64, options), name


def test_register_refuses_a_cost_that_is_no_expression() -> None:
    def weights(a: torch.Tensor, g: None, ctx: MethodContext) -> torch.Tensor:
        return a.flatten(2).mean(-1)

    with pytest.raises(ValueError, match=re.escape("cost 'C +' of method 'badcost'")):
        camkit.register("badcost", family="activation", needs_gradients=False, summary="s", paper="p", cost="C +")(
            weights
        )
    assert "badcost" not in camkit.list_methods()


def test_methods_command_shows_the_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "[forwards per image: 1 + min(C, max_channels or C)]" in lines["scorecam"]
    assert "[--option max_channels=None]" in lines["scorecam"]
    assert "[forwards per image: 1]" in lines["gradcam"]


def test_long_run_warning_names_the_costly_methods() -> None:
    assert cli.long_run_warning({"gradcam": 1}, 1000, 3, 0.05) is None  # 1,000 forwards: under a minute
    line = cli.long_run_warning({"gradcam": 1, "scorecam": 1281, "reciprocam": 50}, 10, 3, 0.02)
    assert line is not None
    assert line.startswith("camkit: about 39,880 model forwards (scorecam 1,281, reciprocam 50 per image and class)")
    assert "roughly 13 min" in line
    assert "max_channels=64" in line


def test_explain_prints_the_estimate_before_a_long_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    monkeypatch.setattr(cli, "LONG_RUN_SECONDS", 0.0)  # every costly run counts as long here
    argv = ["explain", str(ASSETS / "chelsea.png"), "--method", "reciprocam", "--quiet", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert "model forwards (reciprocam 50 per image and class)" in capsys.readouterr().err
    assert cli.main([*argv[:3], "gradcam", *argv[4:]]) == 0
    assert "model forwards" not in capsys.readouterr().err  # one forward per image: no estimate


def test_fast_is_a_method_choice() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["report", "a.png"])
    assert cli._methods(args, "fast") == cli.fast_methods()
    args = parser.parse_args(["explain", "a.png", "--method", "fast", "--method", "scorecam"])
    assert cli._methods(args, "gradcam") == [*cli.fast_methods(), "scorecam"]


def test_version_and_the_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"camkit {camkit.__version__}"
    with pytest.raises(SystemExit):
        cli.main([])
    assert "(see camkit --help)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["explain"])
    assert "(see camkit explain --help)" in capsys.readouterr().err
