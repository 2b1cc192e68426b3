"""The IDX loader of benchmarks/paper/_paper.py, and fig1_fig7_mnist.py in --quick mode.

Everything runs on tiny IDX files that the tests write themselves, so no
data set needs to be installed.
"""

import gzip
import json
import math
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks.paper import _paper

STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def write_tiny_set(directory, n_train=300, n_test=100, gz=True, seed=0):
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
    _paper.write_idx(directory / (STEMS[split, "images"] + suffix), images)
    _paper.write_idx(directory / (STEMS[split, "labels"] + suffix), labels)
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
  arrays = write_tiny_set(tmp_path, n_train=12, n_test=7, gz=gz)
  for split in ("train", "test"):
    images, labels = _paper.load_mnist(tmp_path, split)
    assert images.shape == (len(labels), 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, arrays[split][0])
    np.testing.assert_array_equal(labels, arrays[split][1])
  with pytest.raises(ValueError, match="split must be"):
    _paper.load_mnist(tmp_path, "validation")


def test_load_mnist_prefers_gz_when_both_exist(tmp_path):
  write_tiny_set(tmp_path, n_train=4, n_test=3, gz=True, seed=0)
  plain = write_tiny_set(tmp_path / "other", n_train=5, n_test=3, gz=False, seed=1)
  for stem in STEMS.values():
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
  write_tiny_set(tmp_path, n_train=4, n_test=3)
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
  write_tiny_set(tmp_path, n_train=6, n_test=3)
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
  write_tiny_set(data, n_train=300, n_test=100, gz=True)
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
