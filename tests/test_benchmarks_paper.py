"""benchmarks/paper/: the reproductions of Whitelam et al. (2022) in --quick and small configurations, the long-run modes, and the MNIST-format IDX loader."""

import gzip
import json
import math
import pathlib
import struct
import subprocess
import sys

import pytest
import numpy as np

from benchmarks.paper import _paper

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# From tests/test_paper_small.py
# ---------------------------------------------------------------------------

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


def finite_number(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


def test_fig3_rosenbrock(tmp_path):
  r = run_script("fig3_rosenbrock", tmp_path)
  assert r["config"]["dtype"] == "float64"
  m = r["measured"]
  assert set(m) == {"epsilon=0", "epsilon=0.01", "epsilon=0.1"}
  for v in m.values():
    assert len(v["final_f"]) == r["config"]["seeds"] == 3
    assert all(finite_number(f) and 0 <= f < 3609 for f in v["final_f"])  # f(-2, 2) = 409 + ...
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
    assert all(finite_number(u) and 0 < u < 0.1 for u in v["final_U"]), (name, v["final_U"])
    assert all(finite_number(u) and 0 <= u < 0.1 for u in v["final_U_pseudo"])
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
    assert all(finite_number(x) and 0 < x < 1 for x in m["final_loss"])
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
    assert finite_number(v["median_final_loss"]) and 0 < v["best_final_loss"] <= v["median_final_loss"] < 1
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


# ---------------------------------------------------------------------------
# From tests/test_paper_fig5.py
# ---------------------------------------------------------------------------

FIG5_MODULE = "benchmarks.paper.fig5_rnn"
FIG5_RUNS = {"gd", "adam", "adam_fan_in", "amc_sigma1e-2", "amc_sigma1e-3"}


def _finite(values):
  return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_fig5_rnn_quick(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", FIG5_MODULE, "--quick", "--out-dir", str(tmp_path)],
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
  assert set(runs) == FIG5_RUNS == set(record["summary"])
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
  for name in FIG5_RUNS - {"adam_fan_in"}:
    assert all(abs(row[0] - math.log(2)) < 1e-3 for row in runs[name]["train_loss"]), name


# ---------------------------------------------------------------------------
# From tests/test_paper_mnist.py
# ---------------------------------------------------------------------------

IDX_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def write_tiny_idx_set(directory, n_train=300, n_test=100, gz=True, seed=0):
  """A small MNIST-format set: a class-dependent bright bar plus noise (learnable)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  suffix = ".gz" if gz else ""
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
      images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
    _paper.write_idx(directory / (IDX_STEMS[split, "images"] + suffix), images)
    _paper.write_idx(directory / (IDX_STEMS[split, "labels"] + suffix), labels)
    arrays[split] = (images, labels)
  return arrays


# ---------------------------------------------------------------------------
# (1) The IDX loader.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 28, 28)])
def test_write_read_idx_round_trip(tmp_path, name, shape):
  array = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
  _paper.write_idx(tmp_path / name, array)
  back = _paper.read_idx(tmp_path / name)
  assert back.dtype == np.uint8 and back.shape == shape
  np.testing.assert_array_equal(back, array)
  with (gzip.open if name.endswith(".gz") else open)(tmp_path / name, "rb") as f:
    raw = f.read()
  # The standard header: two zero bytes, type 0x08 (unsigned byte), ndim, big-endian dims.
  assert raw[:4] == bytes([0, 0, 0x08, len(shape)])
  assert struct.unpack(">" + "I" * len(shape), raw[4:4 + 4 * len(shape)]) == shape


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_gz_and_plain(tmp_path, gz):
  arrays = write_tiny_idx_set(tmp_path, n_train=12, n_test=7, gz=gz)
  for split in ("train", "test"):
    images, labels = _paper.load_mnist(tmp_path, split)
    assert images.shape == (len(labels), 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, arrays[split][0])
    np.testing.assert_array_equal(labels, arrays[split][1])
  with pytest.raises(ValueError, match="split must be"):
    _paper.load_mnist(tmp_path, "validation")


def test_load_mnist_prefers_gz_when_both_exist(tmp_path):
  write_tiny_idx_set(tmp_path, n_train=4, n_test=3, gz=True, seed=0)
  plain = write_tiny_idx_set(tmp_path / "other", n_train=5, n_test=3, gz=False, seed=1)
  for stem in IDX_STEMS.values():
    (tmp_path / "other" / stem).rename(tmp_path / stem)
  images, _ = _paper.load_mnist(tmp_path, "train")
  assert len(images) == 4 and len(plain["train"][0]) == 5


def test_data_dir_precedence(tmp_path, monkeypatch):
  env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
  monkeypatch.delenv(_paper.DATA_DIR_ENV, raising=False)
  assert _paper.data_dir(None) == pathlib.Path(_paper.DEFAULT_DATA_DIR)
  monkeypatch.setenv(_paper.DATA_DIR_ENV, str(env_dir))
  assert _paper.data_dir(None) == env_dir
  assert _paper.data_dir(arg_dir) == arg_dir  # --data-dir wins over the variable
  assert _paper.data_dir(str(arg_dir)) == arg_dir
  monkeypatch.setenv(_paper.DATA_DIR_ENV, "")  # empty means unset
  assert _paper.data_dir(None) == pathlib.Path(_paper.DEFAULT_DATA_DIR)
  # The option of the paper scripts feeds data_dir.
  p = _paper.parser("x")
  _paper.add_data_dir(p)
  assert p.parse_args([]).data_dir is None
  assert p.parse_args(["--data-dir", str(arg_dir)]).data_dir == arg_dir


def test_missing_file_error_names_file_and_remedy(tmp_path):
  write_tiny_idx_set(tmp_path, n_train=4, n_test=3)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
  _paper.load_mnist(tmp_path, "train")  # the other split is still fine
  with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*--data-dir"):
    _paper.load_mnist(tmp_path, "test")
  with pytest.raises(FileNotFoundError, match=_paper.DATA_DIR_ENV):
    _paper.load_mnist(tmp_path / "nowhere", "train")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_bad_magic_number(tmp_path, suffix):
  path = tmp_path / ("bad.idx" + suffix)
  opener = gzip.open if suffix else open
  with opener(path, "wb") as f:  # float32 type code 0x0D instead of 0x08
    f.write(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 2) + bytes(8))
  with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
    _paper.read_idx(path)
  with opener(path, "wb") as f:  # nonzero leading bytes (e.g. a PNG)
    f.write(b"\x89PNG\r\n\x1a\n" + bytes(16))
  with pytest.raises(ValueError, match="magic 89504e47"):
    _paper.read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_file(tmp_path, suffix):
  path = tmp_path / ("short.idx" + suffix)
  opener = gzip.open if suffix else open
  with opener(path, "wb") as f:  # header says 3 x 28 x 28, only 100 bytes follow
    f.write(struct.pack(">HBBIII", 0, 0x08, 3, 3, 28, 28) + bytes(100))
  with pytest.raises(ValueError, match=r"header says shape \(3, 28, 28\).*100 bytes"):
    _paper.read_idx(path)
  with opener(path, "wb") as f:
    f.write(b"\x00\x00")
  with pytest.raises(ValueError, match="too short"):
    _paper.read_idx(path)


def test_images_and_labels_must_match(tmp_path):
  write_tiny_idx_set(tmp_path, n_train=6, n_test=3)
  _paper.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
  with pytest.raises(ValueError, match="do not match"):
    _paper.load_mnist(tmp_path, "train")


# ---------------------------------------------------------------------------
# (2) The script, --quick, on a tiny data set.
# ---------------------------------------------------------------------------


def finite(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_fig1_fig7_quick(tmp_path):
  data = tmp_path / "idx"
  write_tiny_idx_set(data, n_train=300, n_test=100, gz=True)
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.paper.fig1_fig7_mnist", "--quick", "--data-dir", str(data),
       "--out-dir", str(out)],
      capture_output=True, text=True, timeout=240, cwd=ROOT,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  r = json.loads((out / "paper_fig1_fig7_mnist.json").read_text())
  png = out / "paper_fig1_fig7_mnist.png"
  assert png.exists() and png.stat().st_size > 1000
  for key in ("command", "claims", "data", "config", "measured", "reproduced", "verdict",
              "wall_s", "machine"):
    assert key in r, key
  assert "--quick" in r["command"] and r["config"]["quick"] is True
  assert 0 < r["wall_s"] < 600

  # The data set used is recorded, and it is the one given by --data-dir.
  assert r["data"]["directory"] == str(data)
  assert r["data"]["train_examples"] == 300 and r["data"]["test_examples"] == 100
  assert "MNIST" in r["data"]["paper_used"]

  panels = ("fig1a", "fig1b_7a", "fig7b")
  assert set(r["verdict"]) == set(panels) and set(r["reproduced"]) == set(panels)
  assert all(isinstance(v, str) and len(v) > 80 for v in r["verdict"].values())
  assert set(r["claims"]) >= set(panels)

  m = r["measured"]
  # Fig. 1a: one final test accuracy per sigma / alpha, in [0, 1]; one history per value.
  for method, values in (("mc", r["config"]["sigmas"]), ("gd", r["config"]["alphas"])):
    sweep = m["fig1a"][method]
    assert np.allclose(sweep["values"], values)
    accs = sweep["final_test_acc"]
    assert len(accs) == len(values) and all(finite(a) and 0 <= a <= 1 for a in accs)
    assert all(finite(x) and x >= 0 for x in sweep["final_train_loss"])
    assert len(sweep["eval"]["test_acc"]) == len(values)
    assert sweep["eval_step"][0] == 0 and sweep["eval_step"][-1] == r["config"]["sweep_steps"]
  assert all(0 <= a <= 1 for a in m["fig1a"]["mc"]["acceptance_overall"])
  assert m["fig1a"]["best_sigma"] in m["fig1a"]["mc"]["values"]
  assert m["fig1a"]["best_alpha"] in m["fig1a"]["gd"]["values"]

  # Fig. 7b: three aMC runs, each with finite losses and accuracies in [0, 1].
  runs = m["fig7b"]["runs"]
  assert set(runs) == {"full", "minibatch", "progressive"}
  for mode, run in runs.items():
    assert 0 <= run["final_test_acc"] <= 1 and finite(run["final_train_loss"])
    assert all(0 <= a <= 1 for a in run["eval"]["test_acc"])
    assert all(finite(x) for x in run["eval"]["train_loss"])
    assert all(finite(x) for x in run["history_loss_on_batch"])
    assert 0 <= run["acceptance_overall"] <= 1 and run["final_sigma"] > 0
    seen = run["examples_seen_at_eval"]
    assert seen[0] == 0 and all(b > a for a, b in zip(seen, seen[1:]))
  assert runs["full"]["batch_size"] == 300
  assert runs["minibatch"]["batch_size"] < 300  # 2000 is shrunk to fit 300 examples
  assert r["config"]["adjusted_for_small_data"]
  assert runs["progressive"]["batch_size"]["start"] < 300
  assert 0 <= runs["progressive"]["final_error_on_minibatch"] <= 1
  assert finite(m["fig7b"]["at_common_epochs"]["epochs"])
  assert r["config"]["amc"]["sigma0"] == 1e-2 and r["config"]["amc"]["n_reset"] == 20
  assert r["config"]["amc"]["epsilon"] == 0.0 and r["config"]["amc"]["signal_norm"] is True

  # --verdict-from recomputes the verdicts and the plot from the JSON alone.
  png.unlink()
  again = subprocess.run(
      [sys.executable, "-m", "benchmarks.paper.fig1_fig7_mnist", "--verdict-from",
       str(out / "paper_fig1_fig7_mnist.json")],
      capture_output=True, text=True, timeout=120, cwd=ROOT,
  )
  assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
  r2 = json.loads((out / "paper_fig1_fig7_mnist.json").read_text())
  assert png.exists()
  assert r2["command"] == r["command"] and r2["wall_s"] == r["wall_s"]
  assert r2["verdict"] == r["verdict"] and r2["reproduced"] == r["reproduced"]
  assert "--verdict-from" in r2["verdict_recomputed"]["by"]


# ---------------------------------------------------------------------------
# From tests/test_paper_benchmarks.py
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Fig. 6 writes the effect record (once bench_signal_norm --part effect)
# ---------------------------------------------------------------------------

# The effect part of the old bench_signal_norm --part effect, now Fig. 6's experiment.
FIG6_EFFECT_QUICK = ["--steps", "200", "--depths", "4", "--seeds", "2", "--adam-lrs", "1e-3",
                     "--no-plot"]


def test_fig6_deep_writes_the_effect_record(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.paper.fig6_deep", *FIG6_EFFECT_QUICK,
       "--out-dir", str(tmp_path)],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  effect = json.loads((tmp_path / "bench_signal_norm_effect.json").read_text())
  assert "command" in effect and effect["machine"]["cpu_count"] >= 1
  assert effect["command"].startswith("python -m benchmarks.paper.fig6_deep")
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
  assert not (tmp_path / "paper_fig6_deep.png").exists()
  assert json.loads((tmp_path / "paper_fig6_deep.json").read_text())["config"]["steps"] == 200
