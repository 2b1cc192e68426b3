"""The benchmark scripts run end to end in a tiny configuration (not timed)."""

import json
import math
import os
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
        "--accept-chains", "1", "2", "--accept-sine-steps", "20", "--accept-mlp-steps", "2",
        "--accept-mlp-examples", "300", "--variants-steps", "20",
        "--mlp-chains", "1", "2", "--mlp-chain-steps", "2",
    ],
    "bench_fit.py": [
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
      [sys.executable, "-m", "benchmarks." + script.removesuffix(".py"), *CASES[script], "--out", str(out)],
      capture_output=True, text=True, timeout=300, cwd=ROOT, env=_quick_env(),
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


SIGNAL_NORM_QUICK = [
    "--steps", "200", "--repeats", "1", "--depths", "4", "--seeds", "2",
    "--mlp-examples", "500", "--mlp-scan-steps", "2", "--deep-scan-steps", "20",
    "--cost-depth", "4", "--adam-lrs", "1e-3", "--no-plot",
]


def test_bench_signal_norm_runs_and_writes_json(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.bench_signal_norm", *SIGNAL_NORM_QUICK,
       "--out-dir", str(tmp_path)],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]

  cost = json.loads((tmp_path / "bench_signal_norm_cost.json").read_text())
  assert cost["machine"]["cpu_count"] >= 1
  assert cost["command"].startswith("python -m benchmarks.bench_signal_norm")
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


PROPOSALS_MODULE = "benchmarks.bench_proposals"


def _run_proposals(out_dir, *extra):
  result = subprocess.run(
      [sys.executable, "-m", PROPOSALS_MODULE, "--quick", "--out-dir", str(out_dir), *extra],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_bench_proposals_quick_writes_json_and_resumes(tmp_path):
  stdout = _run_proposals(tmp_path)
  record = json.loads((tmp_path / "bench_proposals.json").read_text())
  assert (tmp_path / "bench_proposals.png").stat().st_size > 0
  assert not (tmp_path / "bench_proposals.partial.json").exists()  # removed when done
  assert record["command"].startswith("python -m benchmarks.bench_proposals --quick")
  assert record["quick"] is True and record["jax_version"]
  assert record["machine"]["cpu_count"] >= 1
  assert len(record["load_average_start"]) == 3 and len(record["load_average_end"]) == 3
  assert record["config"]["sparse_fraction"] == 0.1 and record["config"]["seeds"] == 1
  assert record["info"]["rnn"]["sequence_length"] == 72  # quick: 8x8 digits + a blank row
  assert record["info"]["deep"]["baseline_mse_best_constant"] == pytest.approx(0.04675, rel=1e-3)
  assert "proposals.orthogonal()" in record["moves"]["rnn"]["orthogonal"]
  assert "proposals.sparse(0.1" in record["moves"]["deep"]["sparse"]
  # Quick: the Gaussian on the paper init and every move on the orthogonal init.
  moves = ("gaussian", "orthogonal", "sparse", "layerwise")
  expected = [f"{task}/{init}/{move}" for task in ("rnn", "deep")
              for init, move in [("paper", "gaussian")] + [("orthogonal", m) for m in moves]]
  assert list(record["groups"]) == expected
  for key, g in record["groups"].items():
    task, init, move = key.split("/")
    assert (g["task"], g["init"], g["move"]) == (task, init, move)
    assert g["seeds"] == 1 and g["wall_s"] > 0
    assert all(0.0 <= a <= 1.0 for a in g["mean_acceptance"])
    if task == "rnn":
      assert g["steps"] == 40 and g["eval_step"] == [0, 20, 40]
      for name in ("test_acc", "train_loss", "wh0_spectral_norm"):
        assert len(g[name]) == 1 and len(g[name][0]) == 3, (key, name)
      assert all(0.0 <= a <= 1.0 for a in g["test_acc"][0])
      assert g["eval_wall_s"][0] == 0 and g["eval_wall_s"][-1] > 0
      step = g["steps_to_target"][0]
      assert step is None or (step in g["eval_step"] and g["test_acc"][0][
          g["eval_step"].index(step)] >= 0.9)
    else:
      assert g["steps"] == 40 and g["history_step"] == [0, 20, 40]
      assert len(g["loss"]) == 1 and len(g["loss"][0]) == 3
      assert all(math.isfinite(v) and v > 0 for v in g["final_loss"])
      # The history's last row is the current loss of the final params.
      assert g["loss"][0][-1] == pytest.approx(g["final_loss"][0], rel=1e-4)
    spectral = g.get("wh0_spectral_norm")
    if spectral is not None and init == "orthogonal" and move == "orthogonal":
      # A rotation keeps the recurrent matrix's singular values (gain 1).
      assert all(s == pytest.approx(1.0, abs=1e-3) for s in spectral[0])
  rows = {(r["task"], r["init"], r["move"]): r for r in record["summary"]}
  assert len(rows) == len(expected)
  deep = rows[("deep", "paper", "gaussian")]
  assert deep["threshold"] == pytest.approx(
      min(2 * deep["final_loss_median"],
          0.5 * record["info"]["deep"]["baseline_mse_best_constant"]), rel=1e-6)
  for r in rows.values():
    assert 0 <= r["reached"] <= r["seeds"]
    assert (r["steps_to_target_median"] is None) == (r["reached"] == 0)
  assert "RNN (Fig. 5)" in stdout and "deep narrow net" in stdout

  # Resume: a checkpointed group with the same configuration is reused, not rerun.
  group = dict(record["groups"]["rnn/paper/gaussian"], wall_s=12345.0)
  (tmp_path / "bench_proposals.partial.json").write_text(json.dumps(
      {"config": record["config"], "groups": {"rnn/paper/gaussian": group}}))
  stdout = _run_proposals(tmp_path, "--tasks", "rnn", "--inits", "paper", "--moves", "gaussian",
                          "--no-plot")
  assert "resuming: 1 group(s)" in stdout
  again = json.loads((tmp_path / "bench_proposals.json").read_text())
  assert list(again["groups"]) == ["rnn/paper/gaussian"]
  assert again["groups"]["rnn/paper/gaussian"]["wall_s"] == 12345.0


PARALLEL_MODULE = "benchmarks.bench_parallel"


def _run_parallel(out_dir, *extra):
  result = subprocess.run(
      [sys.executable, "-m", PARALLEL_MODULE, "--quick", "--out-dir", str(out_dir), *extra],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_bench_parallel_quick_writes_json_and_resumes(tmp_path):
  import importlib.util

  stdout = _run_parallel(tmp_path)
  record = json.loads((tmp_path / "bench_parallel.json").read_text())
  assert (tmp_path / "bench_parallel.png").stat().st_size > 0
  assert not (tmp_path / "bench_parallel.partial").exists()  # removed when done
  assert record["command"].startswith("python -m benchmarks.bench_parallel --quick")
  assert record["quick"] is True and record["jax_version"]
  assert set(record["library_at_start"]) == {"commit", "amc_jax_modified"}
  assert record["machine"]["cpu_count"] >= 1
  assert len(record["load_average_start"]) == 3 and len(record["load_average_end"]) == 3
  has_evosax = importlib.util.find_spec("evosax") is not None
  assert (record["evosax_version"] is not None) == has_evosax
  methods = ["aMC", "aMC K=4", "aMC K=16", "aMC K=64", "population", "replica exchange",
             "population annealing"] + (["OpenES", "SNES", "CMA-ES"] if has_evosax else [])
  assert list(record["groups"]) == [f"sine/{m}" for m in methods]  # quick: the sine net only
  assert has_evosax or "evosax is not importable" in stdout
  budget = record["info"]["sine"]["budget"]
  assert budget == 600 and record["config"]["seeds"] == 1
  for key, g in record["groups"].items():
    assert g["problem"] == "sine" and key == f"sine/{g['method']}"
    assert g["seeds"] == 1 and len(g["best_loss"]) == 1 and len(g["seconds"]) == 1
    assert g["compilations_while_timed"] == 0
    # The same budget for everyone, nearly used up.
    assert budget - 130 <= g["evaluations_used"] <= budget, key
    assert g["evaluations"][-1] == g["evaluations_used"] and len(g["evaluations"]) >= 2
    if g["method"] not in ("OpenES", "SNES", "CMA-ES"):
      # The count rule agrees with the evaluations the loss actually saw.
      assert g["evaluations_counted"] == [g["evaluations_used"]], key
    curve = g["best_loss"][0]
    assert len(curve) == len(g["evaluations"]) == len(g["seconds"][0])
    assert all(b <= a for a, b in zip(curve, curve[1:]))  # best so far
    assert all(math.isfinite(v) and v > 0 for v in curve)
    assert curve[-1] == g["final_best_loss"][0] == g["median_final_best_loss"]
    assert curve[0] <= record["info"]["sine"]["initial_loss"]
    assert all(b >= a for a, b in zip(g["seconds"][0], g["seconds"][0][1:]))
  re = record["groups"]["sine/replica exchange"]
  assert re["hyperparameters"]["temperatures"][0] == 0.0
  assert len(re["extra"][0]["swap_acceptance"]) == re["hyperparameters"]["R"] - 1
  assert record["groups"]["sine/population"]["extra"][0]["n_cloned"] > 0
  cost = record["groups"]["sine/aMC K=64"]["step_cost"]
  assert cost["ratio_k64_over_k1"] > 0 and cost["repeats"] == 1
  assert cost["ratio_per_evaluation"] == pytest.approx(cost["ratio_k64_over_k1"] / 64)
  summary = record["summary"]["sine"]
  assert summary["step_cost_k64_over_k1"] == cost["ratio_k64_over_k1"]
  amc = record["groups"]["sine/aMC"]
  at = amc["evaluations"].index(summary["threshold"]["at_evaluations"])
  assert summary["threshold"]["value"] == amc["best_loss"][0][at]
  assert summary["threshold"]["at_evaluations"] <= budget / 2
  rows = {r["method"]: r for r in summary["rows"]}
  assert list(rows) == methods
  assert rows["aMC"]["reached"] == 1
  assert rows["aMC"]["median_evaluations_to_threshold"] <= summary["threshold"]["at_evaluations"]
  for r in rows.values():
    assert (r["median_evaluations_to_threshold"] is None) == (r["reached"] == 0)
  assert "step cost K=64 / K=1" in stdout and "threshold" in record["table"]

  # Resume: a checkpointed group with the same configuration is reused, not rerun.
  partial = tmp_path / "bench_parallel.partial"
  partial.mkdir()
  group = dict(record["groups"]["sine/aMC"], median_wall_s=12345.0)
  (partial / "sine__aMC.json").write_text(json.dumps(
      {"config": record["config"], "info": record["info"]["sine"], "group": group}))
  stdout = _run_parallel(tmp_path, "--methods", "aMC", "--no-plot")
  assert "resuming sine/aMC" in stdout
  again = json.loads((tmp_path / "bench_parallel.json").read_text())
  assert list(again["groups"]) == ["sine/aMC"]
  assert again["groups"]["sine/aMC"]["median_wall_s"] == 12345.0
