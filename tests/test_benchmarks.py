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
