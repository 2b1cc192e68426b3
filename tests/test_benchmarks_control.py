"""benchmarks/control/: the controllers benchmark end to end in its quick
configuration (not timed): its JSON has every method, returns within the
environment's range, environment steps increasing, and the table."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rejax_importable() -> bool:
  if importlib.util.find_spec("rejax") is None:
    return False
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
      import rejax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except (ImportError, AttributeError):  # tfp under a jax that removed its names
      return False
  return True


def test_control_compare_quick_writes_every_method_and_resumes(tmp_path):
  pytest.importorskip("gymnax")
  # Warnings are errors, but for evosax 0.3.2's PGPE calling the deprecated
  # optax.global_norm (evosax is optional and not installed in CI); the
  # script itself silences the deprecations tfp raises when rejax imports it.
  cmd = [sys.executable, "-W", "error",
         "-W", "ignore:optax.global_norm is deprecated:DeprecationWarning",
         "-m", "benchmarks.control.compare", "--quick",
         "--no-plot", "--out-dir", str(tmp_path)]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((tmp_path / "control.json").read_text())
  names = {"aMC sigma0 0.1", "aMC sigma0 0.3", "aMC K=4", "aMC population M=4", "metropolis"}
  if importlib.util.find_spec("evosax") is not None:
    names |= {"OpenES", "SNES", "CMA-ES", "PGPE", "SNES (evosax example)"}
  if _rejax_importable():
    names.add("PPO (rejax)")
  assert {key.split(" | ")[1] for key in record["runs"]} == names
  for run in record["runs"].values():
    assert all(1.0 <= r <= 500.0 for r in run["eval_return"])  # CartPole's range
    assert run["env_steps"][0] == 0 and all(
        b > a for a, b in zip(run["env_steps"], run["env_steps"][1:]))
    assert all(b >= a for a, b in zip(run["seconds"], run["seconds"][1:]))
    steps, _ = run["solved_at"]
    assert steps is None or steps in run["env_steps"]
  table = record["table"]["CartPole-v1"]
  assert table["threshold"] == 475.0 and set(table["methods"]) == names
  # The per-budget tables: a cell per method, and the method ahead is one with
  # the highest median (or a tie of them).
  for axis in ("ahead_by_env_steps", "ahead_by_seconds"):
    assert table[axis]
    for row in table[axis]:
      assert set(row["median_return"]) == names
      top = max(v for v in row["median_return"].values() if v is not None)
      leaders = {m for m, v in row["median_return"].items() if v == top}
      assert row["ahead"] in leaders or len(leaders) > 1
  assert not (tmp_path / "control_partial.json").exists()
  # A rerun with the partial file present skips the runs already there.
  partial = dict(record, runs={k: v for k, v in record["runs"].items() if "metropolis" not in k})
  (tmp_path / "control_partial.json").write_text(json.dumps(partial))
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("final eval") == 1  # only metropolis ran again


def test_value_at_budget_and_the_method_ahead():
  """The per-budget cell is the last evaluation within the budget, flagged
  when the run ended before it; the method ahead has the highest median."""
  from benchmarks import _common  # pylint: disable=import-outside-toplevel
  from benchmarks.control import compare  # pylint: disable=import-outside-toplevel

  costs, values = [0, 10, 20], [1.0, 5.0, 7.0]
  assert _common.value_at(costs, values, 15) == (5.0, False)
  assert _common.value_at(costs, values, 20) == (7.0, False)
  assert _common.value_at(costs, values, 99) == (7.0, True)  # ended before 99
  assert _common.value_at([5, 10], [1.0, 2.0], 4) == (None, False)
  runs = {"a": [{"env_steps": [0, 10], "eval_return": [0.0, 3.0]},
                {"env_steps": [0, 10], "eval_return": [0.0, 5.0]},
                {"env_steps": [0, 10], "eval_return": [0.0, 9.0]}],
          "b": [{"env_steps": [0, 5, 30], "eval_return": [0.0, 6.0, 8.0]}]}
  rows = compare.ahead(runs, "env_steps", [5, 10, 40])
  assert [r["ahead"] for r in rows] == ["b", "b", "b"]
  assert rows[1]["median_return"] == {"a": 5.0, "b": 6.0}
  assert rows[2]["ended_early"] == {"a": True, "b": True}
  assert compare.ahead(runs, "env_steps", [0])[0]["ahead"] == "a = b"
  # The schedule: whole units within the budget, at most `rows` evaluations.
  assert compare.schedule(100, 5, 10) == (5, 2)
  assert compare.schedule(100, 20, 30) == (3, 1)
  assert compare.schedule(10, 5, 30) == (1, 1)  # at least one unit


def test_a_minatar_game_trains_through_the_shared_policy():
  """Breakout-MinAtar's 10x10x4 boolean observations go through the same
  policy (flattened): an aMC run of the benchmark has its curves, returns
  within the game's range (bricks, >= 0), and no threshold to solve."""
  pytest.importorskip("gymnax")
  import amc_jax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks.control import compare  # pylint: disable=import-outside-toplevel

  with jax.numpy_dtype_promotion("standard"):  # gymnax's games mix dtypes, as users have it
    problem = compare.make_problem("Breakout-MinAtar")
    run = compare.run_amc(problem, amc_jax.amc(0.1, seed=0), 0, budget=32_000, rows=2,
                          episodes=2, evals_per_step=2)
  assert problem.horizon == 1000
  assert run["env_steps"] == [0, 16_000, 32_000]  # 4 steps of 2 x 2 episodes x 1000
  assert all(r >= 0.0 for r in run["eval_return"])
  assert compare.solved_at(run, compare.ENVS["Breakout-MinAtar"][0]) == (None, None)
  assert "Breakout-MinAtar" not in compare.PPO_CONFIGS  # run_all skips PPO there
  assert problem.size == 400 * 16 + 16 + 16 * 3 + 3 > compare.CMA_MAX_PARAMS  # and CMA-ES
