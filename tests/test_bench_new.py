"""Smoke runs of the minibatch study, the forms table and the memory table (not timed)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick_env():
  """XLA:CPU's backend optimisation off: compiling is most of these runs."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  return env


def run(module, *args, timeout=600):
  result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=_quick_env())
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_minibatch_study_quick_writes_every_method_and_resumes(tmp_path):
  run("benchmarks.studies.minibatch", "--quick", "--models", "mlp", "--out-dir", str(tmp_path))
  record = json.loads((tmp_path / "minibatch_quick.json").read_text())
  methods = {r["method"] for r in record["runs"]}
  assert {"full batch, eps=0", "sequential 0.8, eps=0", "sequential 0.95 every chunk, eps=0",
          "fixed 25, eps=0.01", "adam"} <= methods
  assert len(methods) == 17
  for r in record["runs"]:
    c = r["curve"]
    assert c["passes"][0] == 0 and c["passes"][-1] >= 4.0 * (1 - 1e-6)
    assert len(c["passes"]) == len(c["loss"]) == len(c["test_accuracy"])
  summary = record["summary"]["mlp"]["sequential 0.95, eps=0"]
  assert summary["drift"] >= 0 and summary["seeds"] == 1
  # A rerun finds every run in the JSON and computes nothing again.
  again = run("benchmarks.studies.minibatch", "--quick", "--models", "mlp", "--out-dir",
              str(tmp_path))
  assert "mlp seed 0" not in again.stdout


@pytest.mark.slow
def test_forms_table_quick(tmp_path):
  out = tmp_path / "forms.json"
  run("benchmarks.bench_step", "--forms", "--repeats", "1", "--forms-sine-steps", "20",
      "--forms-mlp-steps", "5", "--forms-gaussian-steps", "20", "--out", str(out))
  forms = json.loads(out.read_text())["forms"]
  assert set(forms) == {"sine", "mlp", "gaussian 1000-d"}
  for family in ("sine", "mlp"):
    rows = forms[family]["forms"]
    assert len(rows) == 6 and all(r["metropolis_over_floor"] > 0 for r in rows.values())


@pytest.mark.slow
def test_memory_table_quick(tmp_path):
  run("benchmarks.bench_memory", "--quick", "--part", "compiled", "headline",
      "--out-dir", str(tmp_path))
  record = json.loads((tmp_path / "bench_memory_quick.json").read_text())
  for model in record["compiled"]["models"].values():
    rows = model["rows"]
    assert {"forward", "amc eps=0", "amc eps=0 b=1", "adam", "MeZO"} <= set(rows)
    # Structural: a step holds at least the forward pass and its own params.
    assert all(r["total_mib"] >= rows["forward"]["total_mib"] for r in rows.values())
    assert rows["amc eps=0.1"]["argument"] > rows["amc eps=0"]["argument"]  # mu is one more P
  signal_norm = next(m["rows"] for name, m in record["compiled"]["models"].items()
                     if "signal norm" in name)
  assert signal_norm["amc eps=0.1 signal norm"]["argument"] > signal_norm["amc eps=0.1"]["argument"]
  headline = record["headline"]
  assert [r["width"] for r in headline["ladder"]] == [16, 32]
  assert len(headline["amc_run"]["losses"]) == 4  # the loss before and after each of 3 steps
  assert headline["amc_run"]["peak_rss_mib"] > 0


@pytest.mark.slow
def test_sequential_bias_quick(tmp_path):
  run("benchmarks.studies.sequential_bias", "--quick", "--confidences", "0.95", "1.0",
      "--out-dir", str(tmp_path))
  rows = json.loads((tmp_path / "sequential_bias.json").read_text())["rows"]
  assert [r["confidence"] for r in rows] == [0.95, 1.0]
  assert rows[1]["examples_per_step"] == 1000  # confidence 1 reads everything
  assert rows[0]["examples_per_step"] < 1000
