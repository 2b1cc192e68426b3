"""benchmarks/paper/fig5_rnn.py --quick runs end to end and writes a sane JSON and PNG."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULE = "benchmarks.paper.fig5_rnn"
RUNS = {"gd", "adam", "adam_fan_in", "amc_sigma1e-2", "amc_sigma1e-3"}


def _finite(values):
  return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_fig5_rnn_quick(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", MODULE, "--quick", "--out-dir", str(tmp_path)],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((tmp_path / "paper_fig5_rnn.json").read_text())
  assert (tmp_path / "paper_fig5_rnn.png").stat().st_size > 0

  assert record["name"] == "fig5_rnn" and record["quick"] is True
  assert "99.8" in record["paper_claim"]
  assert isinstance(record["verdict"], str) and record["verdict"]
  assert math.isfinite(record["wall_s"]) and record["wall_s"] > 0
  config = record["config"]
  assert config["sequence_length"] == 72  # 8x8 digits + a blank row in quick mode
  assert config["data_source"] == "sklearn.load_digits"
  assert set(config["inits"]) == {"paper", "fan_in"}

  runs = record["runs"]
  assert set(runs) == RUNS == set(record["summary"])
  for name, run in runs.items():
    n = len(run["chains"])
    assert n >= 1, name
    assert run["init"] == ("fan_in" if name == "adam_fan_in" else "paper")
    evals = run["eval_step"]
    assert evals[0] == 0 and evals[-1] == run["steps"], name
    for key in ("train_loss", "test_acc", "grad_norm", "wh0_rms"):
      assert len(run[key]) == n and all(len(row) == len(evals) for row in run[key]), (name, key)
      assert all(_finite(row) for row in run[key]), (name, key)
    for key in ("best_test_acc", "final_test_acc"):
      assert len(run[key]) == n and _finite(run[key]), (name, key)
      assert all(0.0 <= a <= 1.0 for a in run[key]), (name, key)
    assert all(0.0 <= a <= 1.0 for row in run["test_acc"] for a in row), name
    assert all(g >= 0 for row in run["grad_norm"] for g in row), name
    assert _finite(run["final_train_loss"]) and all(u > 0 for u in run["final_train_loss"])
  for name in ("amc_sigma1e-2", "amc_sigma1e-3"):
    run = runs[name]
    assert run["kind"] == "amc" and run["epsilon"] == 0.0 and run["n_reset"] == 100
    assert all(0.0 <= a <= 1.0 for a in run["mean_acceptance"])
  assert runs["amc_sigma1e-3"]["sigma0"] == 1e-3 and runs["amc_sigma1e-2"]["sigma0"] == 1e-2
  # The paper's init starts every method on the ln 2 plateau.
  for name in RUNS - {"adam_fan_in"}:
    assert all(abs(row[0] - math.log(2)) < 1e-3 for row in runs[name]["train_loss"]), name
