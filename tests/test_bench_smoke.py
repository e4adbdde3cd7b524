"""The benchmark suite keeps working: each measurement runs at toy sizes (seconds) and yields
its figures, and the report is written. No timing is asserted — that is `make bench`'s job."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from bench import adaptive, fleet, memory, overhead, report, rules, startup, store, suite
from bench.common import Figure, Section

QUICK = suite.QUICK


@pytest.mark.parametrize(
    ("value", "target", "better", "verdict"),
    [
        (1.2, 1.3, "lower", "PASS"),
        (1.3, 1.3, "lower", "PASS"),
        (1.4, 1.3, "lower", "MISS"),
        (60.0, 50.0, "higher", "PASS"),
        (29.0, 50.0, "higher", "MISS"),
        (5.0, None, "lower", "info"),
        (math.nan, 2.0, "lower", "n/a"),
    ],
)
def test_figure_verdicts(value: float, target: float | None, better: str, verdict: str) -> None:
    """A figure passes when it is on the right side of its target, inclusive."""
    figure = Figure("f", value, "s", target, better="lower" if better == "lower" else "higher")
    assert figure.verdict == verdict


def test_a_miss_says_by_how_much() -> None:
    """A missed target is reported with its distance as a share of the target."""
    assert Figure("f", 1.69, "x", 1.3).miss_by == "30%"
    assert Figure("f", 1.0, "x", 1.3).miss_by == ""


def test_fleet_has_the_asked_mix_and_truths_for_every_stuck_task() -> None:
    """The adaptive fleet is 70/25/5 and knows when each stuck task starts to be stuck."""
    built = fleet.fleet(400, seed=1)
    kinds = list(built.kinds.values())
    assert kinds.count("done") == 280
    assert kinds.count("healthy") == 100
    stuck = [k for k, kind in built.kinds.items() if kind in fleet.STUCK_KINDS]
    assert len(stuck) == 20
    assert set(built.truth) == set(stuck)
    assert all(0 < built.truth[k] < 75 * 60 for k in stuck)
    assert all(sc.created <= 0 for sc in built.scenarios)  # no 404 before creation


def test_rules_benchmark_counts_evaluations() -> None:
    """The rules benchmark yields a positive evaluation rate against its target."""
    section = rules.run(QUICK.rules)
    rate = section.figures[0]
    assert rate.target == 200_000
    assert rate.value > 0


def test_store_benchmark_times_saves_and_counts_transactions() -> None:
    """Store.save and the bare executemany are timed; a real cycle is one transaction."""
    section = store.run(QUICK.store)
    by_name = {f.name: f for f in section.figures}
    assert by_name["Transactions per cycle"].value == 1
    assert all(f.value > 0 for f in section.figures)


def test_startup_benchmark_times_validate_against_import_aiohttp() -> None:
    """validate and `import aiohttp` are both timed, with an import-time breakdown."""
    section = startup.run(QUICK.startup)
    assert section.figures[0].target == 2.0
    assert section.figures[0].value > 0
    assert any("import watchdog.cli" in note for note in section.notes)


def test_memory_benchmark_measures_both_points_and_the_http_path() -> None:
    """Peak RSS is measured at two sizes in-process and once over HTTP."""
    section = memory.run(QUICK.memory)
    assert section.figures[0].name == "Peak RSS slope per watched task"
    assert len(section.figures) == 4
    assert all(not math.isnan(f.value) for f in section.figures[1:])


def test_overhead_and_requests_benchmarks_run_side_by_side() -> None:
    """check, the floor, the client alone and the requests loop all run against one simulator."""
    cost, versus = overhead.run(QUICK.overhead)
    by_name = {f.name: f for f in cost.figures}
    assert by_name["CPU time of check / floor (start-up included)"].value > 0
    assert by_name["Wall time of check / floor (start-up included)"].value > 0
    assert by_name["Fixed CPU (the same runs over no IDs), check / floor"].value > 0
    if importlib.util.find_spec("requests") is not None:
        assert versus.figures[0].target == 50.0
    else:  # the benchmark's own dependency: the section says how to install it
        assert "requests" in versus.notes[0]


def test_adaptive_benchmark_counts_requests_in_both_modes() -> None:
    """Both polling modes are simulated on a fake clock and their requests compared."""
    section = adaptive.run(QUICK.adaptive)
    ratio = section.figures[0]
    assert ratio.target == 5.0
    assert ratio.value >= 1.0  # adaptive polling never asks more than polling every interval


def test_report_lists_figures_targets_and_the_machine(tmp_path: Path) -> None:
    """The markdown has the machine, a summary of targets, each section and its misses."""
    ok = Section("rules", "Rules engine", [Figure("rate", 3e5, "/s", 2e5, better="higher")])
    bad = Section("store", "Store", [Figure("save", 2.0, "s", 1.0)], ["why it is slow"])
    text = report.markdown(
        [bad, ok], {"CPU": "test CPU", "cores": "2"}, seconds=1.0, load="0.1 0.1 0.1"
    )
    assert "| CPU | test CPU |" in text
    assert text.index("Rules engine") < text.index("## 2. Store")  # the order
    assert "| save | 2.00 s | ≤ 1.00 s | MISS by 100% |" in text
    assert "why it is slow" in text
    out = tmp_path / "docs" / "performance.md"
    report.write(out, text)
    assert out.read_text(encoding="utf-8") == text


def test_suite_runs_one_benchmark_and_writes_where_told(tmp_path: Path) -> None:
    """`python -m bench --quick --only rules --output F` runs that one and writes F."""
    out = tmp_path / "perf.md"
    assert suite.main(["--quick", "--only", "rules", "--output", str(out)]) == 0
    assert "Task evaluations per second" in out.read_text(encoding="utf-8")
