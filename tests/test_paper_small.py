"""The paper-reproduction scripts of Figs. 2, 3, 4 and 6 run in --quick mode and write sane records."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(name, tmp_path, *extra):
  result = subprocess.run(
      [sys.executable, "-m", f"benchmarks.paper.{name}", "--quick", "--out-dir", str(tmp_path), *extra],
      capture_output=True, text=True, timeout=240, cwd=ROOT,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  json_path = tmp_path / f"paper_{name}.json"
  png_path = tmp_path / f"paper_{name}.png"
  record = json.loads(json_path.read_text())
  assert png_path.exists() and png_path.stat().st_size > 1000
  for key in ("command", "claim", "config", "measured", "verdict", "wall_s", "machine",
              "reproduced"):
    assert key in record, key
  assert record["config"]["quick"] is True
  assert isinstance(record["verdict"], str) and len(record["verdict"]) > 40
  assert 0 < record["wall_s"] < 600
  assert "--quick" in record["command"]
  return record


def finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


def test_fig3_rosenbrock(tmp_path):
  r = run_script("fig3_rosenbrock", tmp_path)
  assert r["config"]["dtype"] == "float64"
  m = r["measured"]
  assert set(m) == {"epsilon=0", "epsilon=0.01", "epsilon=0.1"}
  for v in m.values():
    assert len(v["final_f"]) == r["config"]["seeds"] == 3
    assert all(finite(f) and 0 <= f < 3609 for f in v["final_f"])  # f(-2, 2) = 409 + ...
    assert 0 <= v["mean_acceptance"] <= 1
  # Even 2000 steps separate epsilon = 0.1 from epsilon = 0 by orders of magnitude.
  assert m["epsilon=0.1"]["median_final_f"] < 1e-3 * m["epsilon=0"]["median_final_f"]
  hist = r["history"]
  assert len(hist["epsilon=0.1"]) == 3 and len(hist["epsilon=0.1"][0]) == len(hist["step"])


def test_fig4_highfreq(tmp_path):
  r = run_script("fig4_highfreq", tmp_path)
  per = r["measured"]["per_method"]
  assert set(per) == {"aMC, epsilon -0.005", "aMC, epsilon 0", "aMC, epsilon +0.005",
                      "GD, lr 0.005", "Adam, lr 0.005"}
  for name, v in per.items():
    # Every method improves on the initial net (U ~ 1.1 for a near-zero output).
    assert all(finite(u) and 0 < u < 0.1 for u in v["final_U"]), (name, v["final_U"])
    assert all(finite(u) and 0 <= u < 0.1 for u in v["final_U_pseudo"])
    if name.startswith("aMC"):
      assert 0 < v["mean_acceptance"] < 1
      assert all(0 < s <= 0.1 for s in v["final_sigma"])
  curves = r["curves"]["aMC, epsilon 0"]
  assert curves["eval_step"][0] == 0 and curves["eval_step"][-1] == r["config"]["steps"]
  assert curves["U"][0][0] > curves["U"][0][-1]


def test_fig2_acceptance(tmp_path):
  r = run_script("fig2_acceptance", tmp_path)
  nets = r["measured"]["nets"]
  assert list(nets) == ["w10_d2"] and nets["w10_d2"]["n_params"] == 141
  for method in ("MC", "aMC"):
    m = nets["w10_d2"]["methods"][method]
    assert 0 < m["overall_acceptance"] <= 1
    assert m["binned"] and all(0 <= b["A"] <= 1 and b["windows"] > 0 for b in m["binned"])
    assert sum(b["windows"] for b in m["binned"]) == \
        r["config"]["seeds"] * r["config"]["steps"] // r["config"]["log_every"]
    assert all(finite(x) and 0 < x < 1 for x in m["final_loss"])
  assert nets["w10_d2"]["methods"]["MC"]["final_sigma"] == pytest.approx([1e-3, 1e-3])
  assert set(r["checks"]) >= {"MC_A_falls_with_loss", "aMC_A_large"}


def test_fig6_deep_quick(tmp_path):
  r = run_script("fig6_deep", tmp_path)
  table = r["measured"]["table"]
  assert list(table) == ["4"]
  assert set(table["4"]) == {"aMC, signal norm on", "aMC, signal norm off"}
  base = r["config"]["baseline_mse_best_constant"]
  assert base == pytest.approx(0.04675, abs=1e-4)
  for v in table["4"].values():
    assert v["seeds"] == 2 and 0 <= v["seeds_below_0.9_baseline"] <= 2
    assert finite(v["median_final_loss"]) and 0 < v["best_final_loss"] <= v["median_final_loss"] < 1
  assert r["verdict"].startswith("NOT TESTED")


def test_fig6_deep_from_json(tmp_path):
  src = ROOT / "benchmarks" / "results" / "bench_signal_norm_effect.json"
  assert src.exists(), "the committed Fig. 6 effect run is missing"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.paper.fig6_deep", "--from-json", str(src), "--out-dir",
       str(tmp_path), "--no-plot"],
      capture_output=True, text=True, timeout=120, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  r = json.loads((tmp_path / "paper_fig6_deep.json").read_text())
  effect = json.loads(src.read_text())
  assert r["wall_s"] == effect["wall_s_total"]
  assert r["command_of_run"] == effect["command"]
  assert "--from-json" in r["command"] and "no rerun" in r["source"]
  assert set(r["measured"]["table"]) == set(effect["depths"])
  assert isinstance(r["reproduced"], bool) and len(r["verdict"]) > 40
