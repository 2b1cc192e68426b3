"""benchmarks/control/: the controllers benchmark end to end in its quick
configuration (not timed): its JSON has every method, returns within the
environment's range, environment steps increasing, and the table."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_control_compare_quick_writes_every_method_and_resumes(tmp_path):
  pytest.importorskip("gymnax")
  # Warnings are errors, but for evosax 0.3.2's PGPE calling the deprecated
  # optax.global_norm (evosax is optional and not installed in CI).
  cmd = [sys.executable, "-W", "error",
         "-W", "ignore:optax.global_norm is deprecated:DeprecationWarning",
         "-m", "benchmarks.control.compare", "--quick",
         "--no-plot", "--out-dir", str(tmp_path)]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((tmp_path / "control.json").read_text())
  names = {"aMC sigma0 0.1", "aMC sigma0 0.3", "aMC K=4", "metropolis"}
  if importlib.util.find_spec("evosax") is not None:
    names |= {"OpenES", "SNES", "CMA-ES", "PGPE"}
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
  assert not (tmp_path / "control_partial.json").exists()
  # A rerun with the partial file present skips the runs already there.
  partial = dict(record, runs={k: v for k, v in record["runs"].items() if "metropolis" not in k})
  (tmp_path / "control_partial.json").write_text(json.dumps(partial))
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("final eval") == 1  # only metropolis ran again
