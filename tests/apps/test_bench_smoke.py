"""The engine benchmark runs end to end in its tiny mode and writes a complete JSON report; the
id-map benchmark runs on a small log (its native == reference check included).

No timing is asserted here (speed targets are printed figures in bench/, never test assertions);
what is asserted is that the run works and that its built-in cross-checks hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "engine_bench.py"


def test_quick_benchmark_writes_report_and_plot(tmp_path: Path) -> None:
    out_json = tmp_path / "engine.json"
    out_png = tmp_path / "engine.png"
    command = [sys.executable, str(BENCH), "--quick", "--seed", "7"]
    run = subprocess.run(
        [*command, "--json", str(out_json), "--plot", str(out_png)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "targets (issue 2)" in run.stdout

    report = json.loads(out_json.read_text())
    assert {"meta", "flows", "results", "ratios", "targets", "fills", "checks", "deep_book"} <= report.keys()
    assert report["meta"]["quick"] is True and report["meta"]["seed"] == 7
    assert report["meta"]["engine"] == "native"

    apis = {(r["flow"], r["api"]) for r in report["results"] if r["engine"].startswith("fastbook")}
    for flow in ("liquibook_perf", "exchange_core"):
        assert {(flow, "batch"), (flow, "per-command")} <= apis
    peers = {r["engine"].split(" ")[0] for r in report["results"]}
    assert {"liquibook", "cython-orderbook", "ReferenceBook"} <= peers
    for result in report["results"]:
        assert result["commands"] > 0 and result["best_seconds"] > 0 and result["cmds_per_s"] > 0

    assert set(report["ratios"]) >= {
        "batch_cmds_per_s_flow_a",
        "per_command_vs_liquibook",
        "per_command_vs_cython_orderbook",
        "per_command_vs_reference",
    }
    assert all(value is not None for value in report["ratios"].values())

    # Correctness cross-checks the benchmark makes along the way.
    assert report["fills"]["fastbook"] > 0
    assert report["fills"]["equal"] is True, report["fills"]
    assert report["fills"]["filled_qty_equal"] is True, report["fills"]
    assert report["fills"]["cython_orderbook"] == report["fills"]["fastbook_on_cython_orderbook_prefix"]
    assert report["checks"] and all(report["checks"].values()), report["checks"]

    mix = report["flows"]["b"]["mix_percent"]
    assert mix["move"] > mix["gtc"] > mix["cancel"] > mix["ioc"] > 0

    points = report["deep_book"]["points"]
    assert [p["depth"] for p in points] == [1_000, 10_000]
    assert all(p["per_command_ns"] > 0 and p["batch_ns"] > 0 for p in points)

    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_idmaps_benchmark_runs_on_a_small_log(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "bench" / "idmaps_bench.py"), "--orders", "2000", "--rounds", "1"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2000 log entries in 4 messages" in run.stdout
    assert run.stdout.count("us/entry") == 5
