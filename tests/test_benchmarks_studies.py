"""benchmarks/studies/: the studies run end to end in tiny configurations (not timed)."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# From tests/test_benchmarks.py
# ---------------------------------------------------------------------------


# The cost part; the effect part is Fig. 6 (tests/test_benchmarks_paper.py).
SIGNAL_NORM_QUICK = [
    "--repeats", "1", "--mlp-examples", "500", "--mlp-scan-steps", "2",
    "--deep-scan-steps", "20", "--cost-depth", "4",
]


def test_bench_signal_norm_runs_and_writes_json(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.studies.signal_norm", *SIGNAL_NORM_QUICK,
       "--out-dir", str(tmp_path)],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]

  cost = json.loads((tmp_path / "bench_signal_norm_cost.json").read_text())
  assert cost["machine"]["cpu_count"] >= 1
  assert cost["command"].startswith("python -m benchmarks.studies.signal_norm")
  assert cost["xla_cpu_workaround"] is True
  assert set(cost["models"]) == {"mlp", "deep"}
  for row in cost["models"].values():
    times = row["us_per_step"]
    assert set(times) == {"on", "off", "on, lambdas = 1"}
    assert all(t > 0 for t in times.values())
    assert row["ratio_on_off"] == pytest.approx(times["on"] / times["off"])
    # The cached losses agree with a float64 NumPy forward pass.
    assert all(c["rel_err"] < 1e-4 for c in row["loss_check"].values())

  assert not (tmp_path / "bench_signal_norm_effect.json").exists()  # Fig. 6's now


PROPOSALS_MODULE = "benchmarks.studies.proposals"


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
  assert record["command"].startswith("python -m benchmarks.studies.proposals --quick")
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


PARALLEL_MODULE = "benchmarks.studies.parallel"


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
  assert record["command"].startswith("python -m benchmarks.studies.parallel --quick")
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


# ---------------------------------------------------------------------------
# From tests/test_bench_evosax.py
# ---------------------------------------------------------------------------

EVOSAX_QUICK = ["--evaluations", "20000", "--seeds", "1", "--popsizes", "8", "--rows", "20", "--no-plot"]


def test_bench_evosax_runs_and_writes_json(tmp_path):
  out = tmp_path / "bench_evosax.json"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.studies.evosax", *EVOSAX_QUICK, "--out", str(out)],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  if importlib.util.find_spec("evosax") is None:
    # The optional extra is missing: the script says so and writes nothing.
    assert "evosax is not installed" in result.stdout
    assert not out.exists()
    pytest.skip("evosax is not installed (checked the script's message)")

  record = json.loads(out.read_text())
  assert record["machine"]["cpu_count"] >= 1
  assert record["command"].startswith("python -m benchmarks.studies.evosax")
  assert record["plot"] is None and not out.with_suffix(".png").exists()
  methods = record["methods"]
  assert {r["kind"] for r in methods.values()} == {"amc", "open_es", "cma_es"}
  assert len(methods) == 4  # aMC, OpenAI-ES defaults and scaled, CMA-ES at P = 8
  for name, r in methods.items():
    assert r["evaluations"] == 20000, name
    assert len(r["final_best_loss"]) == 1 and len(r["wall_s"]) == 1
    assert all(math.isfinite(v) and v >= 0 for v in r["final_best_loss"]), name
    assert r["median_wall_s"] > 0 and r["evaluations_per_s"] > 0, name
    curves = r["curves"]
    n = len(curves["evaluations"])
    assert curves["evaluations"][-1] == r["evaluations"]
    assert len(curves["best_loss"][0]) == n and len(curves["seconds"][0]) == n
    assert all(math.isfinite(v) for v in curves["best_loss"][0]), name
    # Best-so-far never rises; time never runs backwards.
    assert all(b <= a for a, b in zip(curves["best_loss"][0], curves["best_loss"][0][1:]))
    assert all(t > 0 for t in curves["seconds"][0])
    assert all(b >= a for a, b in zip(curves["seconds"][0], curves["seconds"][0][1:]))
    if r["kind"] == "amc":
      assert r["final_mean_loss"] is None
    else:
      assert all(math.isfinite(v) for v in r["final_mean_loss"]), name
  # aMC gets somewhere on this budget (the initial loss is about 0.53).
  assert methods["aMC"]["median_final_best_loss"] < 1e-2


# ---------------------------------------------------------------------------
# From tests/test_bench_new.py
# ---------------------------------------------------------------------------

def _quick_compile_env():
  """XLA:CPU's backend optimisation off: compiling is most of these runs."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  return env


def run(module, *args, timeout=600):
  result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=_quick_compile_env())
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
def test_sequential_bias_quick(tmp_path):
  run("benchmarks.studies.sequential_bias", "--quick", "--confidences", "0.95", "1.0",
      "--out-dir", str(tmp_path))
  rows = json.loads((tmp_path / "sequential_bias.json").read_text())["rows"]
  assert [r["confidence"] for r in rows] == [0.95, 1.0]
  assert rows[1]["examples_per_step"] == 1000  # confidence 1 reads everything
  assert rows[0]["examples_per_step"] < 1000


# ---------------------------------------------------------------------------
# From tests/test_correspondence.py
# ---------------------------------------------------------------------------

def test_correspondence_benchmark_runs_and_writes_json(tmp_path):
  import json
  import pathlib
  import subprocess
  import sys

  root = pathlib.Path(__file__).resolve().parents[1]
  out = tmp_path / "corr.json"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.studies.correspondence", "--run", "1e-2", "0.02",
       "--lambdas", "0.1", "0.5", "--chains", "16", "--records", "2", "--k-points", "100",
       "--out", str(out)],
      capture_output=True, text=True, timeout=300, cwd=root,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(out.read_text())
  assert set(record["final"]) == {"alpha 0.01, float32, lambda 0.1", "alpha 0.01, float32, lambda 0.5"}
  for row in record["final"].values():
    assert row["t"] == pytest.approx(0.02)
    assert 0 < row["delta_floor"] and 0 < row["delta"] < 1
  (run,) = record["runs"]
  for lam in run["lambdas"].values():
    assert lam["numpy_check_max_rel_err"] < 1e-4
    assert len(lam["time"]) == 3 and len(lam["gd_final"]) == 90
  assert (tmp_path / "corr_alpha0.01_float32.png").stat().st_size > 0
