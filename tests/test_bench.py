"""`make bench` and `make scale` in small: each runs whole, as a subprocess, and writes every
key BENCHMARKS.md reads. The figures themselves are the long runs' to judge (never timed here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("floor", "handwritten", "handwritten_tuned", "partnerflow")


def run(module: str, *args: str, timeout_s: float) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_bench_in_small_measures_four_variants_and_checks_every_target(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ("--n", "12", "--rounds", "1", "--warmup", "2", "--open", "30", "--import-rows", "20")
    run("bench", *args, "--output", str(out), timeout_s=600)
    results = json.loads(out.read_text())
    for variant in VARIANTS:
        assert results[variant]["lifecycles"] == 12
        assert results[variant]["lifecycles_per_s"] > 0
    # Every lifecycle's history has the same shape within a variant; the peers' shapes differ.
    assert results["handwritten_tuned"]["events_per_lifecycle"] < results["handwritten"]["events_per_lifecycle"]
    for key in ("ratio_vs_handwritten", "ratio_vs_tuned", "ratio_vs_floor", "rss_mb_10k_open", "import_rows_per_s"):
        assert results[key] > 0, key
    assert results["open"]["relationships"] == 30
    assert results["events_out"]["events_delivered"] == results["events_out"]["events"] > 0
    assert set(results["targets"]) == {
        "ratio_vs_handwritten >= 1.3",
        "ratio_vs_tuned >= 1.0",
        "ratio_vs_floor >= 0.7",
        "accept_p99_ms <= 0.8 x handwritten's",
        "accept_p99_ms <= tuned's",
        "cpu_s_per_lifecycle <= tuned's",
        "events_per_lifecycle <= tuned's",
        "rss_mb_10k_open <= 200",
    }


def test_scale_in_small_writes_every_figure_of_scale_json(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    args = ("--relationships", "60", "--chunk", "30", "--queries", "2", "--lifecycles", "4", "--limit", "50")
    run("bench.scale", *args, "--output", str(out), timeout_s=600)
    results = json.loads(out.read_text())
    assert results["open_relationships"] == 60  # counted before the lifecycles run
    assert [c["rows"] for c in results["import_chunks"]] == [30, 30]
    for key in (
        "import_rows_per_s",
        "import_rows_per_s_last_10k",
        "worker_rss_mb",
        "temporal_db_bytes_per_relationship",
        "records_bytes_per_relationship",
        "list_p99_ms",
        "accept_p99_ms_at_scale",
    ):
        assert results[key] > 0, key
