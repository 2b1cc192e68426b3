"""benchmarks/speed/: the speed and memory scripts run end to end in tiny configurations (not timed)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# From tests/test_benchmarks.py
# ---------------------------------------------------------------------------

CASES = {
    "step.py": [
        "--steps", "50", "--mlp-steps", "2", "--mlp-mb-steps", "5", "--deep-steps", "5",
        "--rnn-steps", "2", "--mlp-examples", "300", "--batch", "50", "--depth", "4",
        "--rnn-sequences", "20", "--rnn-length", "8", "--chains", "1", "2",
        "--ensemble-steps", "20", "--repeats", "1", "--no-torch",
        "--accept-chains", "1", "2", "--accept-sine-steps", "20", "--accept-mlp-steps", "2",
        "--accept-mlp-examples", "300", "--variants-steps", "20",
        "--mlp-chains", "1", "2", "--mlp-chain-steps", "2",
    ],
    "fit.py": [
        "--steps", "200", "--chunk", "100", "--repeats", "1", "--n-large", "2000",
        "--batch", "100", "--ensemble-steps", "100", "--ensemble-sizes", "1", "2",
        "--measure-separate", "2",
    ],
}


def _quick_env():
  """The environment with XLA:CPU's backend optimisation off: these runs
  compile a few dozen programs and run each briefly, so compiling is most of
  their time (the numbers are not what is tested)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  return env


@pytest.mark.parametrize("script", list(CASES))
def test_benchmark_runs_and_writes_json(script, tmp_path):
  out = tmp_path / "result.json"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.speed." + script.removesuffix(".py"), *CASES[script], "--out", str(out)],
      capture_output=True, text=True, timeout=300, cwd=ROOT, env=_quick_env(),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(out.read_text())
  assert record["machine"]["cpu_count"] >= 1
  assert "command" in record
  # Every row is a positive time, and the reference row of each table is 1.
  if "tables" in record:  # speed/step.py: one table per problem
    tables = list(record["tables"].values())
    assert set(record["tables"]) == {"sine", "mlp", "mlp_mb", "deep", "rnn"}
    assert all(row["chain_steps_per_second"] > 0 for row in record["ensembles_sine"].values())
    for name in ("sine", "mlp"):
      rows = record["accept_cond_vs_select"][name]
      assert all(rows[m]["cond_over_select"] > 0 for m in ("1", "2"))
    for rows in (record["ensembles_sine"], record["ensembles_mlp"]):
      assert all(rows[m]["ratio_to_vmapped_floor"] > 0 for m in ("1", "2"))
    variants = record["variants_and_blackjax"]["us_per_step"]
    assert len(variants) >= 4 and all(v > 0 for v in variants.values())
  else:
    tables = [record["batch_mode"], record["minibatch"]]
  for table in tables:
    times = table["us_per_step"]
    ratios = table.get("ratio_to_floor") or table["ratio_to_bare_scan"]
    assert all(t > 0 for t in times.values())
    assert sorted(ratios.values())[0] > 0 and 1.0 in ratios.values()
    assert set(ratios) == set(times)


# ---------------------------------------------------------------------------
# From tests/test_bench_new.py
# ---------------------------------------------------------------------------

def run(module, *args, timeout=600):
  result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=_quick_env())
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_forms_table_quick(tmp_path):
  out = tmp_path / "forms.json"
  run("benchmarks.speed.step", "--forms", "--repeats", "1", "--forms-sine-steps", "20",
      "--forms-mlp-steps", "5", "--forms-gaussian-steps", "20", "--out", str(out))
  forms = json.loads(out.read_text())["forms"]
  assert set(forms) == {"sine", "mlp", "gaussian 1000-d"}
  for family in ("sine", "mlp"):
    rows = forms[family]["forms"]
    assert len(rows) == 6 and all(r["metropolis_over_floor"] > 0 for r in rows.values())


@pytest.mark.slow
def test_memory_table_quick(tmp_path):
  run("benchmarks.speed.memory", "--quick", "--part", "compiled", "headline",
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
