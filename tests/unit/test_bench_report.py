"""The load curve in the benchmark's report: its table, its verdict, its plot and the flag that asks for it."""

import pytest

from bench import report
from streams.cli import main


def _point(share: float, p99: float | None) -> dict:
    timed = p99 is not None
    return {"share": share, "rate": round(40_000 * share), "offered": 1_000, "actions": 10 if timed else 0,
            "p50": p99 / 2 if timed else None, "p95": p99 * 0.9 if timed else None, "p99": p99,
            "worker_cores": 0.5, "stolen": 0.01}


def test_the_curve_lists_every_share_and_names_those_under_the_target(tmp_path):
    entry = {"engine": {"load_curve": [_point(0.2, 60.0), _point(0.3, 95.0), _point(0.4, 150.0),
                                       _point(0.5, None)]}}
    lines = report._load_curve(entry)
    rows = [line for line in lines if line.startswith("| 0.")]
    assert [row.split(" | ")[1] for row in rows] == ["8,000", "12,000", "16,000", "20,000"]
    assert rows[-1].split(" | ")[3] == "n/a / n/a / n/a"
    assert any("p99 was under 100 ms at 0.2, 0.3 of the maximum rate" in line for line in lines)
    assert f"![engine latency by offered rate]({report.LOAD_PNG})" in lines
    report.plot_load(report._timed_points(entry), tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_curve_without_actions_has_no_plot_and_an_older_run_no_curve():
    lines = report._load_curve({"engine": {"load_curve": [_point(0.25, None), _point(0.5, None)]}})
    assert "p99 was 100 ms or more at every rate measured" in " ".join(lines)
    assert not any(line.startswith("![") for line in lines)
    assert report._load_curve({"engine": {}}) == []


@pytest.mark.parametrize("value", ["0.2,x", "1.5", "0", "0.3,-0.1"])
def test_load_shares_outside_zero_to_one_are_a_one_line_usage_error(capsys, value):
    assert main(["bench", "--load-shares", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lam: usage error: argument --load-shares:") and err.count("\n") == 1
