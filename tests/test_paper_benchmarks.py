"""The paper scripts' long-run modes (issue 16) in small configurations, and Fig. 8's --quick.

* fig8_resnet.py --quick: a width-4 ResNet-18 trained by aMC and Adam on a
  tiny MNIST-format set that the test writes itself (no data set needed);
* fig1_fig7_mnist.py --long: MC, GD and aMC side by side, checkpointed, and a
  second call that resumes from the checkpoints;
* fig2_acceptance.py --study: aMC's acceptance counted three ways, by n_s;
* fig5_rnn.py with --runs, --checkpoint-dir and --data mnist --pool.
"""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks.paper import _paper

STEMS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def write_tiny_set(directory, n_train=256, n_test=64, seed=0):
  """A learnable MNIST-format set: a class-dependent bright bar plus noise."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, n in (("train", n_train), ("test", n_test)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
      images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
    _paper.write_idx(directory / STEMS[split][0], images)
    _paper.write_idx(directory / STEMS[split][1], labels)
  return directory


def run(script, *args, timeout=300):
  result = subprocess.run([sys.executable, "-m", "benchmarks.paper." + script.removesuffix(".py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout


def finite(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_fig8_resnet_quick(tmp_path):
  data = write_tiny_set(tmp_path / "idx")
  out = tmp_path / "out"
  run("fig8_resnet.py", "--quick", "--data-dir", data, "--out-dir", out)
  r = json.loads((out / "paper_fig8_resnet.json").read_text())
  assert (out / "paper_fig8_resnet.png").stat().st_size > 1000
  assert r["config"]["quick"] is True and "--quick" in r["command"]
  assert r["run_at_paper_scale"] is False and r["verdict"].startswith("NOT RUN")
  assert r["config"]["amc"] == {"sigma0": 1e-3, "epsilon": 1e-3, "n_reset": 100,
                                "signal_norm": False}
  assert r["config"]["n_params"] > 10_000  # width 4: a ResNet-18 of ~45k parameters
  runs = r["measured"]["runs"]
  assert set(runs) == {"amc", "adam"}
  for m, v in runs.items():
    assert v["eval_step"] == [0, 8, 16]
    assert all(finite(x) and x > 0 for x in v["eval"]["train_loss"]), m
    assert all(0 <= a <= 1 for a in v["eval"]["test_acc"]), m
  assert 0 <= np.mean(runs["amc"]["acceptance"]) <= 1
  assert 0 < runs["amc"]["final_sigma"] <= 1.0001e-3  # float32 sigma0
  # The paper's init for aMC: output ~ 0, so the loss starts at ln 10.
  assert abs(runs["amc"]["eval"]["train_loss"][0] - math.log(10)) < 1e-3


def test_fig8_full_mode_refuses_cpu(tmp_path):
  result = subprocess.run([sys.executable, "-m", "benchmarks.paper.fig8_resnet", "--data-dir",
                           str(tmp_path), "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert result.returncode != 0 and "sized for a GPU" in result.stderr


def test_long_segments():
  from benchmarks.paper import fig1_fig7_mnist as fig1
  segs = fig1.long_segments(100_000, 2500)
  assert sum(n for n, _ in segs) == 100_000
  assert all(n % c == 0 for n, c in segs)
  assert segs[0] == (1000, 100) and segs[1] == (4500, 500) and segs[2] == (4500, 500)
  assert segs[3] == (25_000, 2500)
  assert len(segs) == 7 and segs[-1] == (15_000, 2500)
  assert fig1.long_segments(1200, 2500) == [(1000, 100), (200, 100)]
  assert fig1.plateau([0, 1000, 2000, 4000], [0.1, 0.8, 0.85, 0.852])[1] is True
  assert fig1.plateau([0, 1000, 2000, 4000], [0.1, 0.5, 0.6, 0.7])[1] is False


def test_fig1_long_quick_resumes(tmp_path):
  data = write_tiny_set(tmp_path / "idx", n_train=300, n_test=100)
  out, ck = tmp_path / "out", tmp_path / "ck"
  common = ["--quick", "--long", "--data-dir", data, "--out-dir", out, "--checkpoint-dir", ck]
  run("fig1_fig7_mnist.py", *common, "--long-steps", 1000)
  first = json.loads((out / "paper_fig1_long.json").read_text())
  assert set(first["measured"]["runs"]) == {"MC", "GD", "aMC"}
  assert {p.name for p in ck.iterdir()} >= {"MC.ckpt", "GD.json", "aMC.ckpt"}
  stdout = run("fig1_fig7_mnist.py", *common, "--long-steps", 1200)
  assert stdout.count("resumed at step 1000") == 3
  r = json.loads((out / "paper_fig1_long.json").read_text())
  assert r["complete"] is True and r["config"]["steps_target"] == 1200
  assert r["data"]["train_examples"] == 300
  for name, v in r["measured"]["runs"].items():
    assert v["steps_done"] == 1200
    assert v["eval_step"] == [0] + list(range(100, 1201, 100)), name
    # The first 1000 steps are those of the first call, bit for bit.
    np.testing.assert_array_equal(v["eval"]["train_loss"][:11],
                                  first["measured"]["runs"][name]["eval"]["train_loss"])
    assert all(0 <= a <= 1 for row in v["eval"]["test_acc"] for a in row)
  assert r["measured"]["runs"]["MC"]["values"] == [3e-2]
  assert r["measured"]["runs"]["GD"]["values"] == [10.0]
  per = r["measured"]["per_run"]
  assert set(per) == {"MC sigma=0.03", "GD alpha=10", "aMC sigma0=0.01"}
  assert isinstance(r["measured"]["mc_within_2_points_of_gd"], bool)
  assert r["reproduced"] in ("yes", "partly", "no") and len(r["verdict"]) > 100


def test_fig2_study_quick(tmp_path):
  run("fig2_acceptance.py", "--quick", "--study", "--out-dir", tmp_path)
  r = json.loads((tmp_path / "paper_fig2_amc_acceptance.json").read_text())
  assert (tmp_path / "paper_fig2_amc_acceptance.png").stat().st_size > 1000
  variants = r["measured"]["w10_d2"]["variants"]
  assert set(variants) == {"MC", "aMC n_s=10", "aMC n_s=100", "aMC n_s=1000",
                           "aMC n_s=100, signal norm off", "MC from aMC nets"}
  for name, v in variants.items():
    last = v["last_quarter"]
    for key in ("A_per_step", "A_window_median", "A_outside_reset_runs"):
      assert 0 <= last[key] <= 1, (name, key)
    # Leaving out the reset runs can only raise the acceptance.
    assert last["A_outside_reset_runs"] >= last["A_per_step"] - 1e-12
  assert variants["MC"]["last_quarter"]["resets_per_1000_steps"] == 0
  assert set(r["checks"]) == {"floor_set_by_n_s", "counting_does_not_change_it",
                              "paper_n_s_flat_once_at_floor", "n_s_10_flat_over_all_losses",
                              "paper_aMC_above_MC_at_same_loss"}
  assert isinstance(r["reproduced"], str) and len(r["verdict"]) > 200
  # --study-from recomputes the verdict from the JSON alone.
  before = r["verdict"]
  run("fig2_acceptance.py", "--study-from", tmp_path / "paper_fig2_amc_acceptance.json")
  again = json.loads((tmp_path / "paper_fig2_amc_acceptance.json").read_text())
  assert again["verdict"] == before and again["command"] == r["command"]


def test_resets_per_window():
  from benchmarks.paper import fig2_acceptance as fig2
  sigma = np.array([[1e-2 * 0.95 ** 2], [1e-2 * 0.95 ** 2], [1e-2 * 0.95 ** 5]])
  np.testing.assert_array_equal(fig2.resets_per_window(sigma, 1e-2), [[2], [0], [3]])


def test_fig5_subset_checkpointed(tmp_path):
  data = write_tiny_set(tmp_path / "idx", n_train=300, n_test=100)
  out, ck = tmp_path / "out", tmp_path / "ck"
  common = ["--quick", "--data-dir", data, "--out-dir", out, "--runs", "gd", "amc_sigma1e-3",
            "--batch-size", 16,
            "--name", "fig5_subset", "--checkpoint-dir", ck, "--segment-steps", 25,
            "--binarise-above", 63.75]
  run("fig5_rnn.py", *common)
  r = json.loads((out / "paper_fig5_subset.json").read_text())
  assert set(r["runs"]) == {"gd", "amc_sigma1e-3"}
  assert r["config"]["sequence_length"] == 49 and r["config"]["pool"] == 4
  assert r["config"]["binarise_above"] == 63.75
  assert r["runs"]["amc_sigma1e-3"]["eval_step"] == [0, 25, 50]
  assert "runs ['amc_sigma1e-3', 'gd'] only" in r["verdict"]
  stdout = run("fig5_rnn.py", *common)  # everything from the checkpoints
  assert stdout.count("resumed at step 50") == 2


def test_issue16_results_committed():
  """The full-strength runs of issue 16 are committed with the settings the tables state."""
  res = ROOT / "benchmarks" / "results"
  load = lambda name: json.loads((res / f"paper_{name}.json").read_text())
  f1 = load("fig1_long")
  assert f1["data"]["train_examples"] == 10_000 and f1["data"]["test_examples"] == 10_000
  assert f1["complete"] is True and set(f1["measured"]["runs"]) == {"MC", "GD", "aMC"}
  assert isinstance(f1["measured"]["mc_within_2_points_of_gd"], bool)
  assert load("fig1_long_mc_sigma1e-2")["measured"]["runs"]["MC"]["values"] == [1e-2]
  f4 = load("fig4_highfreq")
  assert f4["config"]["steps"] == 1_000_000 and f4["config"]["quick"] is False
  assert f4["config"]["sigma0"] == 0.1 and f4["config"]["n_reset"] == 50
  assert all("trajectory" in v for k, v in f4["measured"]["per_method"].items() if "aMC" in k)
  f2 = load("fig2_amc_acceptance")
  assert f2["config"]["n_resets"] == [10, 100, 1000] and f2["config"]["amc"]["n_reset"] == 100
  f5 = load("fig5_rnn_784")
  assert f5["config"]["sequence_length"] == 784 and f5["quick"] is False
  assert f5["runs"]["amc_sigma1e-3"]["sigma0"] == 1e-3
  assert "Fashion-MNIST" in f5["config"]["data"]
