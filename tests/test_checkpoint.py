"""Checkpoints: exact round trips, bit-identical resumption, clear errors."""

import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import amc_jax

X = jnp.linspace(-1.0, 1.0, 64)[:, None]
Y = jnp.sin(2.0 * X)
TX = amc_jax.amc(sigma0=0.05, epsilon=0.05, n_reset=20, seed=3)


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))


# One module instance: bound methods of different instances compare unequal,
# and apply_fn is static in the train state's treedef.
MODEL = MLP()


def make_state(tx=TX):
  return amc_jax.TrainState.create(
      apply_fn=MODEL.apply, params=MODEL.init(jax.random.key(0), X), tx=tx
  )


@jax.jit
def train_step(state):
  return state.apply_loss(lambda p: jnp.mean((state.apply_fn(p, X) - Y) ** 2))


def is_key(x):
  return jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)


def assert_identical(a, b):
  """Same structure, and every leaf of the same type, dtype, shape and bits."""
  leaves_a, def_a = jax.tree_util.tree_flatten(a)
  leaves_b, def_b = jax.tree_util.tree_flatten(b)
  assert def_a == def_b
  for x, y in zip(leaves_a, leaves_b):
    assert is_key(x) == is_key(y)
    if is_key(x):
      assert jax.random.key_impl(x) == jax.random.key_impl(y)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert jnp.result_type(x) == jnp.result_type(y) and jnp.shape(x) == jnp.shape(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


def save_and_restore(tmp_path, tree, target):
  path = tmp_path / "ckpt.msgpack"
  amc_jax.save_checkpoint(path, tree)
  return amc_jax.restore_checkpoint(path, target)


def loss(params):
  return jnp.sum((params["w"] - 1.0) ** 2)


def steps(tx, params, n):
  state = tx.init(params)
  update = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=loss))
  for _ in range(n):
    updates, state = update(params, state)
    params = optax.apply_updates(params, updates)
  return params, state


# --- round trips -----------------------------------------------------------


@pytest.mark.parametrize(
    "make_tx",
    [
        lambda: amc_jax.amc(0.1, epsilon=0.1, n_reset=5, seed=1),
        lambda: amc_jax.metropolis(0.1, temperature=0.1, seed=jax.random.key(2, impl="rbg")),
        lambda: optax.inject_hyperparams(amc_jax.amc)(sigma0=0.1, epsilon=0.1, seed=4),
        lambda: optax.chain(optax.clip(1.0), amc_jax.amc(0.1, epsilon=0.1, seed=5)),
    ],
    ids=["amc", "metropolis_rbg", "injected", "chain"],
)
def test_optimizer_state_round_trip(tmp_path, make_tx):
  tx = make_tx()
  params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
  params, state = steps(tx, params, 7)
  tree = {"params": params, "opt_state": state}
  target = {"params": params, "opt_state": tx.init(params)}
  assert_identical(save_and_restore(tmp_path, tree, target), tree)


def test_train_state_round_trip(tmp_path):
  state = make_state()
  for _ in range(5):
    state = train_step(state)
  restored = save_and_restore(tmp_path, state, make_state())
  assert isinstance(restored, amc_jax.TrainState)
  assert restored.tx is TX and restored.apply_fn == state.apply_fn
  assert_identical(restored, state)


def test_train_state_with_a_gradient_optimizer_round_trip(tmp_path):
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
  state = make_state(tx)
  grads = jax.tree_util.tree_map(jnp.ones_like, state.params)
  state = state.apply_gradients(grads=grads)
  assert_identical(save_and_restore(tmp_path, state, make_state(tx)), state)


def test_ensemble_round_trip(tmp_path):
  tx = amc_jax.amc(0.1, epsilon=0.1)
  params = jnp.zeros((4, 3))
  state = amc_jax.init_ensemble(tx, params, jax.random.key(0))
  target = amc_jax.init_ensemble(tx, params, jax.random.key(1))
  restored = save_and_restore(tmp_path, state, target)
  assert restored.key.shape == (4,)
  assert_identical(restored, state)


def test_float64_and_bfloat16_round_trip(tmp_path, x64):
  del x64
  tx = amc_jax.amc(0.1, epsilon=0.1)
  params = {"w": jnp.zeros(2, jnp.float64), "h": jnp.zeros(3, jnp.bfloat16)}
  params, state = steps(tx, params, 3)
  tree = {"params": params, "opt_state": state}
  restored = save_and_restore(tmp_path, tree, {"params": params, "opt_state": tx.init(params)})
  assert restored["opt_state"].sigma.dtype == jnp.float64
  assert restored["opt_state"].mu["h"].dtype == jnp.bfloat16
  assert_identical(restored, tree)


def test_bare_key_and_array_round_trip(tmp_path):
  key = jax.random.split(jax.random.key(9), 2)
  assert_identical(save_and_restore(tmp_path, key, jax.random.split(jax.random.key(0), 2)), key)
  x = jnp.arange(3, dtype=jnp.int8)
  assert_identical(save_and_restore(tmp_path, x, jnp.zeros(3, jnp.int8)), x)


def test_python_numbers_and_nnx_state_round_trip(tmp_path):
  model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, amc_jax.amc(0.1, seed=2), wrt=nnx.Param)
  tree = {"nnx": nnx.state((model, optimizer)), "epoch": 3, "lr": 0.5}
  fresh = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
  target = {
      "nnx": nnx.state((fresh, nnx.Optimizer(fresh, amc_jax.amc(0.1), wrt=nnx.Param))),
      "epoch": 0,
      "lr": 0.0,
  }
  restored = save_and_restore(tmp_path, tree, target)
  assert restored["epoch"] == 3 and restored["lr"] == 0.5
  assert_identical(restored["nnx"], tree["nnx"])


# --- resumption ------------------------------------------------------------


def test_resumed_run_is_bit_identical_to_the_uninterrupted_run(tmp_path):
  n = 40
  straight = make_state()
  for _ in range(2 * n):
    straight = train_step(straight)

  first = make_state()
  for _ in range(n):
    first = train_step(first)
  path = tmp_path / "run" / "step.msgpack"  # the directory is created
  amc_jax.save_checkpoint(path, first)
  del first
  resumed = amc_jax.restore_checkpoint(path, make_state())
  for _ in range(n):
    resumed = train_step(resumed)

  assert int(resumed.step) == int(straight.step) == 2 * n
  assert_identical(resumed.params, straight.params)
  # key data, mu, sigma, counters, cached loss and last-step info
  assert_identical(resumed.opt_state, straight.opt_state)
  assert int(straight.opt_state.n_accept) > 0


def test_resumed_nnx_run_is_bit_identical(tmp_path):
  def fresh():
    model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    return model, nnx.Optimizer(model, TX, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    loss_fn = lambda m: jnp.mean((m(X) - Y) ** 2)
    optimizer.update(model, None, value_fn=amc_jax.nnx_value_fn(model, loss_fn))

  straight = fresh()
  for _ in range(20):
    step(*straight)
  first = fresh()
  for _ in range(10):
    step(*first)
  amc_jax.save_checkpoint(tmp_path / "nnx.msgpack", nnx.state(first))
  resumed = fresh()
  nnx.update(resumed, amc_jax.restore_checkpoint(tmp_path / "nnx.msgpack", nnx.state(resumed)))
  for _ in range(10):
    step(*resumed)
  assert_identical(nnx.state(resumed), nnx.state(straight))


# --- writing and errors ----------------------------------------------------


def test_save_is_atomic_and_overwrites(tmp_path):
  path = tmp_path / "ckpt.msgpack"
  amc_jax.save_checkpoint(path, {"a": jnp.zeros(2)})
  amc_jax.save_checkpoint(str(path), {"a": jnp.ones(2)})
  assert os.listdir(tmp_path) == ["ckpt.msgpack"]  # no temporary file left
  restored = amc_jax.restore_checkpoint(path, {"a": jnp.zeros(2)})
  np.testing.assert_array_equal(restored["a"], np.ones(2, np.float32))
  # A failed save leaves the previous checkpoint as it was.
  with pytest.raises(TypeError, match="leaf a is a str"):
    amc_jax.save_checkpoint(path, {"a": "text"})
  assert os.listdir(tmp_path) == ["ckpt.msgpack"]
  chex.assert_trees_all_equal(
      amc_jax.restore_checkpoint(path, {"a": jnp.zeros(2)}), {"a": jnp.ones(2)}
  )


def test_save_inside_jit_is_an_error(tmp_path):
  with pytest.raises(TypeError, match="needs concrete values"):
    jax.jit(lambda x: amc_jax.save_checkpoint(tmp_path / "c", {"x": x}))(jnp.zeros(2))


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
    amc_jax.restore_checkpoint(tmp_path / "nope.msgpack", {"a": jnp.zeros(2)})


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / "junk"
  path.write_bytes(b"\xc1 not msgpack")
  with pytest.warns(DeprecationWarning), pytest.raises(
      ValueError, match="not a readable msgpack checkpoint"):
    amc_jax.restore_checkpoint(path, {"a": jnp.zeros(2)})
  from flax import serialization

  path.write_bytes(serialization.to_bytes({"a": jnp.zeros(2)}))
  with pytest.warns(DeprecationWarning), pytest.raises(
      ValueError, match="not an amc_jax checkpoint"):
    amc_jax.restore_checkpoint(path, {"a": jnp.zeros(2)})
  # An Orbax checkpoint that amc_jax did not write.
  import orbax.checkpoint as ocp

  other = tmp_path / "theirs"
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(other, {"a": jnp.zeros(2)})
  checkpointer.wait_until_finished()
  with pytest.raises(ValueError, match="not an amc_jax checkpoint"):
    amc_jax.restore_checkpoint(other, {"a": jnp.zeros(2)})


def test_an_earlier_msgpack_checkpoint_still_restores_with_a_deprecation_warning(tmp_path):
  """Files of earlier amc_jax (flax msgpack) restore bit for bit, say how to
  convert, and a save of the restored tree converts them."""
  from amc_jax._src import checkpoint as checkpoint_lib

  state = train_step(train_step(make_state()))
  path = tmp_path / "old.msgpack"
  checkpoint_lib.save_checkpoint_msgpack(path, state)
  with pytest.warns(DeprecationWarning, match="save the restored tree again|Save the restored"):
    restored = amc_jax.restore_checkpoint(path, make_state())
  assert_identical(restored, state)
  amc_jax.save_checkpoint(path, restored)  # converted in place: now a directory
  assert path.is_dir()
  assert_identical(amc_jax.restore_checkpoint(path, make_state()), state)


def test_orbax_restores_an_amc_jax_checkpoint_by_itself(tmp_path):
  """Orbax's own StandardCheckpointer reads the checkpoint: a nested dict of
  the saved arrays, the typed PRNG key a typed key again."""
  import orbax.checkpoint as ocp

  params, state = steps(TX, {"w": jnp.zeros(3)}, 5)
  amc_jax.save_checkpoint(tmp_path / "ckpt", {"params": params, "opt_state": state})
  raw = ocp.StandardCheckpointer().restore(tmp_path / "ckpt")
  np.testing.assert_array_equal(raw["params"]["w"], params["w"])
  assert is_key(raw["opt_state"]["key"])
  np.testing.assert_array_equal(jax.random.key_data(raw["opt_state"]["key"]),
                                jax.random.key_data(state.key))
  assert int(raw["opt_state"]["count"]) == 5


SHARDED_SCRIPT = """
import sys, numpy as np, jax, amc_jax
sys.path.insert(0, sys.argv[3])
import sharding_worker as worker
path, out = sys.argv[1], sys.argv[2]
assert jax.device_count() == 4
tx, params, state = worker.chain_problem()
params, state = amc_jax.shard_ensemble(params, state, amc_jax.device_mesh("chains"))
run = worker.chain_run(tx, jax.vmap)
(params, state), _ = run(params, state)
amc_jax.save_checkpoint(path, {"params": params, "opt_state": state})
(params, state), accepted = run(params, state)
np.savez(out, loss=np.asarray(state.loss), accepted=np.asarray(accepted),
         **{k: np.asarray(v) for k, v in params.items()})
"""


def test_a_sharded_ensemble_saved_on_four_devices_resumes_on_one_bit_for_bit(tmp_path):
  """tests/sharding_worker.py's 8 chains sharded over 4 CPU devices, saved
  after 50 steps, restored here on one device (the target's placement), 50
  more steps: the same params, losses and decisions as the 4-device run that
  never stopped. A wrong variant, resuming with a fresh state instead of the
  restored one, differs."""
  import subprocess
  import sys

  tests_dir = os.path.dirname(__file__)
  sys.path.insert(0, tests_dir)
  import sharding_worker as worker  # pylint: disable=g-import-not-at-top

  env = dict(os.environ)
  env["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=4"
                      " --xla_cpu_experimental_ynn_fusion_type=-reduce")
  path, out = tmp_path / "sharded", tmp_path / "straight.npz"
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(path), str(out), tests_dir],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  tx, params, fresh = worker.chain_problem()
  restored = amc_jax.restore_checkpoint(path, {"params": params, "opt_state": fresh})
  run = worker.chain_run(tx, jax.vmap)
  (p, s), accepted = run(restored["params"], restored["opt_state"])
  with np.load(out) as straight:
    for k in p:
      np.testing.assert_array_equal(np.asarray(p[k]), straight[k], err_msg=k)
    np.testing.assert_array_equal(np.asarray(s.loss), straight["loss"])
    np.testing.assert_array_equal(np.asarray(accepted), straight["accepted"])
    (p_wrong, _), _ = run(restored["params"], fresh)
    assert not np.array_equal(np.asarray(p_wrong["w"]), straight["w"])


@pytest.mark.parametrize(
    "target, message",
    [
        ({"a": jnp.zeros(2), "b": jnp.zeros(2)}, r"missing from the checkpoint: b"),
        ({"c": jnp.zeros(2)}, r"missing from the checkpoint: c.*but not in target: a"),
        ({"a": jnp.zeros(3)}, r"a \(target float32\[3\], checkpoint float32\[2\]\)"),
        ({"a": jnp.zeros(2, jnp.int32)}, r"a \(target int32\[2\], checkpoint float32\[2\]\)"),
        ({"a": {"x": jnp.zeros(2)}}, r"missing from the checkpoint: a/x.*not in target: a"),
    ],
    ids=["missing", "renamed", "shape", "dtype", "subtree"],
)
def test_structure_mismatch(tmp_path, target, message):
  path = tmp_path / "ckpt.msgpack"
  amc_jax.save_checkpoint(path, {"a": jnp.zeros(2)})
  with pytest.raises(ValueError, match="does not match the structure of target") as e:
    amc_jax.restore_checkpoint(path, target)
  assert e.match(message)


def test_key_mismatches(tmp_path):
  path = tmp_path / "ckpt.msgpack"
  amc_jax.save_checkpoint(path, {"k": jax.random.key(0)})
  with pytest.raises(ValueError, match=r"k \(target a PRNG key \(rbg\)"):
    amc_jax.restore_checkpoint(path, {"k": jax.random.key(0, impl="rbg")})
  with pytest.raises(ValueError, match=r"k \(target uint32\[2\], checkpoint a PRNG key"):
    amc_jax.restore_checkpoint(path, {"k": jax.random.PRNGKey(0)})
  with pytest.raises(ValueError, match=r"target a PRNG key \(threefry2x32\) of shape \[3\]"):
    amc_jax.restore_checkpoint(path, {"k": jax.random.split(jax.random.key(0), 3)})


def test_an_epsilon_zero_state_saved_with_centres_says_how_to_restore_it(tmp_path):
  # Earlier amc_jax kept zero centres (mu) at epsilon = 0; such states now keep none.
  params = {"w": jnp.ones(3)}
  old = amc_jax.amc(0.1, epsilon=jnp.asarray(0.0)).init(params)   # the old layout
  amc_jax.save_checkpoint(tmp_path / "old", old)
  with pytest.raises(ValueError, match=r"epsilon=jnp.asarray\(0.0\)"):
    amc_jax.restore_checkpoint(tmp_path / "old", amc_jax.amc(0.1).init(params))
  restored = amc_jax.restore_checkpoint(
      tmp_path / "old", amc_jax.amc(0.1, epsilon=jnp.asarray(0.0)).init(params)
  )
  assert int(restored.count) == 0 and restored.mu["w"].shape == (3,)
