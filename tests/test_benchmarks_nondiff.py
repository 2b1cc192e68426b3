"""Non-differentiable nets: binary weights, sign units and the 0-1 loss.

* On a tiny teacher-student problem whose labels a binary perceptron
  produces exactly, aMC with ``discrete`` moves reaches zero training error;
  aMC on the 0-1 loss itself brings the error down from chance, and the same
  chain with every move accepted (a deliberately wrong acceptance) does not.
* ``amc_jax.examples.binary`` trains its sign net on (a slice of) digits; its
  reported accuracy matches a NumPy recomputation and its weights stay on
  the grid.
* Every ``benchmarks/nondiff`` script runs in ``--quick`` mode and writes a
  record whose accuracies, costs and grids are checked."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax
from amc_jax import proposals
from amc_jax.examples import binary

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# From tests/test_nondiff.py
# ---------------------------------------------------------------------------

def teacher_data(n=96, d=16, seed=0):
  """Labels of a binary perceptron (no hidden layer) on random +-1 inputs."""
  rng = np.random.default_rng(seed)
  x = rng.choice([-1.0, 1.0], size=(n, d)).astype(np.float32)
  teacher = rng.choice([-1.0, 1.0], size=(d, 2)).astype(np.float32)
  y = np.argmax(x @ teacher, axis=1).astype(np.int32)
  # Ties (equal logits) are ambiguous for any student: drop them.
  keep = (x @ teacher)[:, 0] != (x @ teacher)[:, 1]
  return jnp.asarray(x[keep]), jnp.asarray(y[keep])


def train_perceptrons(loss, steps, seeds, temperature=0.0):
  """Independent aMC chains (one per seed, vmapped) of a binary perceptron.

  Returns the training errors before and after, and the final params, each
  with a leading seed axis.
  """
  x, y = teacher_data()
  tx = amc_jax.amc(0.05, sigma_decay=1.0, proposal=binary.proposal(binary.BINARY, 1e-3))

  def error(p):
    return jnp.mean((jnp.argmax(binary.apply(p, x), -1) != y).astype(jnp.float32))

  def chain(seed):
    params = binary.init_params(jax.random.key(seed + 1), (x.shape[1], 2))
    state = tx.init(params)._replace(key=jax.random.key(seed))

    def body(carry, _):
      p, s = carry
      updates, s = tx.update(None, s, p, value_fn=lambda q: loss(q, x, y),
                             temperature=temperature)
      return (optax.apply_updates(p, updates), s), None

    (end, _), _ = jax.lax.scan(body, (params, state), None, length=steps)
    return error(params), error(end), end

  return jax.jit(jax.vmap(chain))(jnp.asarray(seeds))


def cross_entropy(p, x, y):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(binary.apply(p, x), y))


def zero_one(p, x, y):
  return jnp.mean((jnp.argmax(binary.apply(p, x), -1) != y).astype(jnp.float32))


def test_discrete_moves_fit_a_separable_teacher_exactly():
  start, end, params = train_perceptrons(cross_entropy, 3000, [0])
  assert float(start[0]) > 0.2
  assert float(end[0]) == 0.0
  assert set(np.unique(np.asarray(params["w0"])).tolist()) <= {-1.0, 1.0}


def test_zero_one_loss_training_leaves_chance_and_accepting_everything_does_not():
  # Three independent chains each way: T = 0 Metropolis on the 0-1 loss
  # against the same chain at a temperature so high that every move is
  # accepted (the wrong rule). Chance is 0.5.
  _, right, _ = train_perceptrons(zero_one, 3000, [0, 1, 2])
  _, wrong, _ = train_perceptrons(zero_one, 3000, [0, 1, 2], temperature=1e9)
  assert float(jnp.max(right)) < 0.15, right
  assert float(jnp.min(wrong)) > 0.25, wrong


def test_binary_example_trains_and_reports_numpy_accuracy():
  x_tr, y_tr, x_te, y_te = binary.load_digits()
  result = binary.train(2000, hidden=32, chunk=1000, data=(x_tr[:600], y_tr[:600], x_te, y_te))
  w0, w1 = (np.asarray(result.params[k]) for k in ("w0", "w1"))
  assert set(np.unique(w0)) <= {-1.0, 1.0} and set(np.unique(w1)) <= {-1.0, 1.0}
  # The accuracy again in NumPy, float64, from the returned params.
  p = {k: np.asarray(v, np.float64) for k, v in result.params.items()}
  h = np.where(x_te @ p["w0"] / 8.0 + p["b0"] >= 0, 1.0, -1.0)
  logits = p["gain"] * (h @ p["w1"] / np.sqrt(32.0) + p["b1"])
  numpy_accuracy = np.mean(np.argmax(logits, 1) == y_te)
  assert result.test_accuracy == pytest.approx(numpy_accuracy, abs=1.5 / len(y_te))
  assert result.test_accuracy > 0.4  # chance is 0.1
  h = result.history
  assert list(h["step"]) == [1000, 2000]
  assert h["loss"][-1] < np.log(10.0) and np.all(np.diff(h["loss"]) <= 0)
  assert np.all((h["acceptance"] > 0) & (h["acceptance"] < 1))


def test_binary_example_main_runs(capsys):
  binary.main(["--steps", "400", "--chunk", "200", "--hidden", "16", "--no-xla-workaround"])
  out = capsys.readouterr().out
  assert "test accuracy" in out and "weights on the grid: True" in out


def test_discrete_proposal_rejects_off_grid_example_params():
  params = binary.init_params(jax.random.key(0), (4, 3))
  params["w0"] = params["w0"].at[0, 0].set(0.5)
  with pytest.raises(ValueError, match="off the grid"):
    amc_jax.amc(0.1, proposal=binary.proposal()).init(params)


def write_tiny_fmnist(directory: pathlib.Path):
  from benchmarks._mnist import write_idx
  rng = np.random.default_rng(0)
  for prefix, n in (("train", 120), ("t10k", 60)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, 28, 28)) * 60 + labels[:, None, None] * 19).astype(np.uint8)
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)


EXPERIMENTS = {
    "sign_activation": {"aMC, cross-entropy", "Adam 0.001 + STE", "Adam 0.01 + STE"},
    "binary_weights": {"aMC, binary weights", "BinaryConnect, binary", "aMC, ternary weights",
                       "BinaryConnect, ternary"},
    "zero_one_loss": {"aMC, 0-1 loss, T = 0", "aMC, 0-1 loss, annealed", "aMC, cross-entropy",
                      "Adam 0.01, cross-entropy", "Adam 0.01, 0-1 loss"},
    "fully_discrete": {"aMC, cross-entropy", "aMC, 0-1 loss", "BinaryNet (Adam + STE)"},
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_nondiff_script_quick(name, tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  write_tiny_fmnist(data)
  extra = ["--datasets", "digits", "fmnist"] if name == "sign_activation" else []
  result = subprocess.run(
      [sys.executable, "-m", f"benchmarks.nondiff.{name}", "--quick", "--out-dir", str(tmp_path),
       "--data-dir", str(data), *extra],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  record = json.loads((tmp_path / f"nondiff_{name}_quick.json").read_text())
  assert (tmp_path / f"nondiff_{name}_quick.png").stat().st_size > 1000
  assert record["quick"] is True and "--quick" in record["command"]
  assert set(record["datasets"]) == ({"digits", "fmnist"} if extra else {"digits"})
  for ds, block in record["datasets"].items():
    runs = block["runs"]
    assert {r["method"] for r in runs} == EXPERIMENTS[name]
    for r in runs:
      c = r["curve"]
      assert c["step"][0] == 0 and c["step"][-1] == r["steps"]
      assert all(0.0 <= a <= 1.0 for a in c["test_accuracy"] + c["train_accuracy"])
      assert np.all(np.diff(c["evaluations"]) > 0) and np.all(np.diff(c["seconds"]) >= 0)
      if r["on_grid"] is not None:  # every grid weight of the hard net on its grid
        assert r["on_grid"] is True, (ds, r["method"])
      if "acceptance" in r:
        assert 0.0 < r["acceptance"] < 1.0
    # At T = 0 the objective Monte Carlo trains on never rises between
    # checkpoints, and a quick run already lowers it.
    for r in runs:
      if r["method"].startswith("aMC") and "annealed" not in r["method"]:
        objective = np.asarray(r["curve"]["objective"])
        assert np.all(np.diff(objective) <= 1e-6 * objective[0]), r["method"]
        assert objective[-1] < objective[0], r["method"]
    summary = block["summary"]
    assert set(summary["final"]) == EXPERIMENTS[name]
    for axis in ("evaluations", "seconds"):
      assert summary[axis] and all(row["best"] in EXPERIMENTS[name] for row in summary[axis])
  table = subprocess.run(
      [sys.executable, "-m", "benchmarks.nondiff.table", str(tmp_path / f"nondiff_{name}_quick.json")],
      capture_output=True, text=True, timeout=60, cwd=ROOT)
  assert table.returncode == 0, table.stderr[-2000:]
  for method in EXPERIMENTS[name]:
    assert f"| {name} | digits | {method} |" in table.stdout
  assert f"| {name} | digits | 1000 evaluations |" in table.stdout
  if name == "zero_one_loss":  # zero gradient: Adam on the 0-1 loss stays where it started
    for r in record["datasets"]["digits"]["runs"]:
      if r["method"] == "Adam 0.01, 0-1 loss":
        assert len(set(r["curve"]["objective"])) == 1, r["curve"]["objective"]
  if name in ("binary_weights", "fully_discrete"):
    assert any(r["on_grid"] is True for r in record["datasets"]["digits"]["runs"])


def test_move_choice_quick(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.nondiff.move_choice", "--quick", "--out-dir",
       str(tmp_path), "--no-plot"],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  record = json.loads((tmp_path / "nondiff_move_choice_quick.json").read_text())
  runs = record["datasets"]["digits"]["runs"]
  assert [r["method"] for r in runs] == [
      "dense, sigma0 0.01, decay 0.95", "dense, sigma0 0.03, decay 0.95",
      "dense, sigma0 0.1, decay 0.95", "layerwise, sigma 0.1 fixed", "sparse 0.001, sigma 1 fixed"]
  for r in runs:
    objective = np.asarray(r["curve"]["objective"])  # T = 0: never rises, and falls
    assert np.all(np.diff(objective) <= 1e-6 * objective[0]) and objective[-1] < objective[0]
    assert 0.0 < r["acceptance"] < 1.0
  # The fixed-size moves keep their sigma; the dense ones shrink it by 0.95 per
  # 100 consecutive rejections, so at most by 0.95 ** (200 // 100) here.
  assert [r["final_sigma"] for r in runs[3:]] == [0.1, 1.0]
  for r, s0 in zip(runs[:3], (1e-2, 3e-2, 1e-1)):
    assert s0 * 0.95 ** 2 * (1 - 1e-6) <= r["final_sigma"] <= s0 * (1 + 1e-6)
