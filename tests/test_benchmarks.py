"""The benchmark scripts run end to end in a tiny configuration (not timed)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

CASES = {
    "bench_step.py": ["--steps", "100", "--repeats", "1"],
    "bench_fit.py": [
        "--steps", "200", "--chunk", "100", "--repeats", "1", "--n-large", "2000",
        "--batch", "100", "--ensemble-steps", "100", "--ensemble-sizes", "1", "2",
        "--measure-separate", "2",
    ],
}


@pytest.mark.parametrize("script", list(CASES))
def test_benchmark_runs_and_writes_json(script, tmp_path):
  out = tmp_path / "result.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / script), *CASES[script], "--out", str(out)],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(out.read_text())
  assert record["machine"]["cpu_count"] >= 1
  assert "command" in record
  # Every row is a positive time, and the reference row of each table is 1.
  tables = [record] if "ratio_to_floor" in record else [record["batch_mode"], record["minibatch"]]
  for table in tables:
    times = table["us_per_step"]
    ratios = table.get("ratio_to_floor") or table["ratio_to_bare_scan"]
    assert all(t > 0 for t in times.values())
    assert sorted(ratios.values())[0] > 0 and 1.0 in ratios.values()
    assert set(ratios) == set(times)
