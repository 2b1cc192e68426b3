"""benchmarks/bench_evosax.py runs end to end in a tiny configuration (not timed)."""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

QUICK = ["--evaluations", "20000", "--seeds", "1", "--popsizes", "8", "--rows", "20", "--no-plot"]


def test_bench_evosax_runs_and_writes_json(tmp_path):
  out = tmp_path / "bench_evosax.json"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.bench_evosax", *QUICK, "--out", str(out)],
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
  assert record["command"].startswith("python -m benchmarks.bench_evosax")
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
