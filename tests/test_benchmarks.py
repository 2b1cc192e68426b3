"""The benchmark scripts run end to end in a tiny configuration (not timed)."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

CASES = {
    "bench_step.py": [
        "--steps", "50", "--mlp-steps", "2", "--mlp-mb-steps", "5", "--deep-steps", "5",
        "--rnn-steps", "2", "--mlp-examples", "300", "--batch", "50", "--depth", "4",
        "--rnn-sequences", "20", "--rnn-length", "8", "--chains", "1", "2",
        "--ensemble-steps", "20", "--repeats", "1", "--no-torch",
    ],
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
  if "tables" in record:  # bench_step.py: one table per problem
    tables = list(record["tables"].values())
    assert set(record["tables"]) == {"sine", "mlp", "mlp_mb", "deep", "rnn"}
    assert all(row["chain_steps_per_second"] > 0 for row in record["ensembles_sine"].values())
  else:
    tables = [record["batch_mode"], record["minibatch"]]
  for table in tables:
    times = table["us_per_step"]
    ratios = table.get("ratio_to_floor") or table["ratio_to_bare_scan"]
    assert all(t > 0 for t in times.values())
    assert sorted(ratios.values())[0] > 0 and 1.0 in ratios.values()
    assert set(ratios) == set(times)


SIGNAL_NORM_QUICK = [
    "--steps", "200", "--repeats", "1", "--depths", "4", "--seeds", "2",
    "--mlp-examples", "500", "--mlp-scan-steps", "2", "--deep-scan-steps", "20",
    "--cost-depth", "4", "--adam-lrs", "1e-3", "--no-plot",
]


def test_bench_signal_norm_runs_and_writes_json(tmp_path):
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "bench_signal_norm.py"), *SIGNAL_NORM_QUICK,
       "--out-dir", str(tmp_path)],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]

  cost = json.loads((tmp_path / "bench_signal_norm_cost.json").read_text())
  assert cost["machine"]["cpu_count"] >= 1
  assert cost["command"].startswith("python benchmarks/bench_signal_norm.py")
  assert cost["xla_cpu_workaround"] is True
  assert set(cost["models"]) == {"mlp", "deep"}
  for row in cost["models"].values():
    times = row["us_per_step"]
    assert set(times) == {"on", "off", "on, lambdas = 1"}
    assert all(t > 0 for t in times.values())
    assert row["ratio_on_off"] == pytest.approx(times["on"] / times["off"])
    # The cached losses agree with a float64 NumPy forward pass.
    assert all(c["rel_err"] < 1e-4 for c in row["loss_check"].values())

  effect = json.loads((tmp_path / "bench_signal_norm_effect.json").read_text())
  assert "command" in effect and effect["machine"]["cpu_count"] >= 1
  assert effect["baseline_mse_best_constant"] == pytest.approx(0.04675, rel=1e-3)
  assert set(effect["depths"]) == {"4"}
  methods = effect["depths"]["4"]["methods"]
  assert set(methods) == {"aMC, signal norm on", "aMC, signal norm off", "Adam, lr 0.001"}
  for r in methods.values():
    assert len(r["final_loss"]) == 2
    assert all(math.isfinite(v) and v >= 0 for v in r["final_loss"])
    assert len(r["history_loss"]) == 2
    assert len(r["history_loss"][0]) == len(effect["history_steps"])
  assert effect["wall_s_total"] > 0 and effect["plot"] is None
  assert not (tmp_path / "bench_signal_norm_effect.png").exists()
