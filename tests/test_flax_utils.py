"""Flax integration: amc_jax.TrainState (linen) and nnx.Optimizer with nnx_value_fn."""

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state as flax_train_state

import amc_jax

X = jnp.linspace(-1.0, 1.0, 64)[:, None]
Y = jnp.sin(2.0 * X)
N_STEPS = 200


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))


# One transformation object for all tests: jitted steps that close over the
# same tx (a static field of the train state) are compiled once.
TX = amc_jax.amc(sigma0=0.05, epsilon=0.05, n_reset=20, seed=0)


# One module instance: bound methods of different instances compare unequal,
# and apply_fn is static in the train state's treedef, so a fresh MLP() per
# state would recompile every jitted step.
MODEL = MLP()


def make_state(tx, cls=amc_jax.TrainState, seed=0, **fields):
  return cls.create(
      apply_fn=MODEL.apply, params=MODEL.init(jax.random.key(seed), X), tx=tx, **fields
  )


def mse(apply_fn, params):
  return jnp.mean((apply_fn(params, X) - Y) ** 2)


@jax.jit
def loss_of(state):
  return mse(state.apply_fn, state.params)


@jax.jit
def amc_step(state):
  return state.apply_loss(lambda p: mse(state.apply_fn, p))


def assert_trees_equal(a, b):
  """Bit-identical leaves, PRNG keys compared through their data."""
  unwrap = lambda t: jax.tree_util.tree_map(
      lambda x: jax.random.key_data(x)
      if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)
      else x,
      t,
  )
  chex.assert_trees_all_equal(unwrap(a), unwrap(b), strict=True)


# --- linen TrainState ------------------------------------------------------


def test_linen_mlp_trains_with_amc_and_counts_steps():
  state = make_state(TX)
  initial = float(loss_of(state))
  for _ in range(N_STEPS):
    state = amc_step(state)
  assert int(state.step) == N_STEPS
  assert int(state.opt_state.count) == N_STEPS
  assert isinstance(state, amc_jax.TrainState)
  assert isinstance(state.opt_state, amc_jax.AMCState)
  final = float(loss_of(state))
  assert final < 0.5 * initial
  assert float(state.opt_state.loss) == final
  assert int(state.opt_state.n_accept) > 0


def test_apply_loss_is_bit_identical_to_driving_tx_update_by_hand():
  tx = TX
  state = make_state(tx)
  params, opt_state = state.params, tx.init(state.params)
  loss = lambda p: mse(state.apply_fn, p)

  @jax.jit
  def by_hand(params, opt_state):
    updates, opt_state = tx.update(None, opt_state, params, value_fn=loss)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(50):
    state = amc_step(state)
    params, opt_state = by_hand(params, opt_state)
  assert_trees_equal(state.params, params)
  assert_trees_equal(state.opt_state, opt_state)


def test_scan_of_steps_equals_a_loop_of_jitted_steps():
  state = make_state(TX)

  @jax.jit
  def run(state):
    return jax.lax.scan(lambda s, _: (amc_step(s), None), state, None, length=30)[0]

  scanned = run(state)
  looped = state
  for _ in range(30):
    looped = amc_step(looped)
  assert_trees_equal(scanned.params, looped.params)
  assert_trees_equal(scanned.opt_state, looped.opt_state)
  assert int(scanned.step) == int(looped.step) == 30


def test_extra_args_reach_tx_update():
  """value=, scales= go to amc; a zero scale freezes a parameter."""
  state = make_state(TX)
  frozen = jax.tree_util.tree_map(jnp.zeros_like, state.params)
  step = jax.jit(
      lambda s, value: s.apply_loss(lambda p: mse(s.apply_fn, p), value=value, scales=frozen)
  )
  new = step(state, jnp.float32(-1.0))
  assert_trees_equal(new.params, state.params)
  assert int(new.step) == 1
  # value= re-bases the comparison: the frozen proposal's loss (> 0) is
  # rejected against -1, so the state keeps the given current loss.
  assert not bool(new.opt_state.info.accepted)
  assert float(new.opt_state.loss) == -1.0


@pytest.fixture
def standard_promotion():
  """optax.adam's bias correction (a Python float ** an int32 count) needs it."""
  with jax.numpy_dtype_promotion("standard"):
    yield


def test_gradient_optimizer_matches_flax_train_state(standard_promotion):
  del standard_promotion
  tx = optax.adam(1e-2)
  ours, theirs = make_state(tx), make_state(tx, cls=flax_train_state.TrainState)

  def step(state):
    grads = jax.grad(lambda p: mse(state.apply_fn, p))(state.params)
    return state.apply_gradients(grads=grads)

  step = jax.jit(step)
  initial = float(loss_of(ours))
  for _ in range(20):
    ours, theirs = step(ours), step(theirs)
  assert_trees_equal(ours.params, theirs.params)
  assert_trees_equal(ours.opt_state, theirs.opt_state)
  assert int(ours.step) == 20
  assert float(loss_of(ours)) < initial


def test_extra_args_are_ignored_by_optimizers_that_do_not_use_them():
  sgd = optax.sgd(0.1)
  plain = optax.GradientTransformation(sgd.init, sgd.update)  # no extra args
  for tx in [sgd, plain]:
    state = make_state(tx)
    grads = jax.tree_util.tree_map(jnp.ones_like, state.params)
    new = state.apply_gradients(grads=grads, value_fn=lambda p: 0.0)
    expected = jax.tree_util.tree_map(lambda p: p - 0.1, state.params)
    chex.assert_trees_all_close(new.params, expected)


def test_overwrite_with_gradient_collection_matches_flax():
  """flax's fp8 collection: replaced by its grads, never seen by the optimizer."""
  owg = flax_train_state.OVERWRITE_WITH_GRADIENT
  params = {"params": {"w": jnp.zeros(2)}, owg: {"s": jnp.ones(1)}}
  grads = {"params": {"w": jnp.ones(2)}, owg: {"s": jnp.full(1, 3.0)}}
  kwargs = dict(apply_fn=None, params=params, tx=optax.sgd(0.5))
  ours = amc_jax.TrainState.create(**kwargs).apply_gradients(grads=grads)
  theirs = flax_train_state.TrainState.create(**kwargs).apply_gradients(grads=grads)
  assert_trees_equal(ours.params, theirs.params)
  np.testing.assert_array_equal(ours.params[owg]["s"], np.full(1, 3.0, np.float32))
  # Monte Carlo: value_fn sees params["params"]; the collection stays as it is.
  state = amc_jax.TrainState.create(apply_fn=None, params=params, tx=TX)
  state = state.apply_loss(lambda p: jnp.sum((p["w"] - 1.0) ** 2))
  assert_trees_equal(state.params[owg], params[owg])
  assert int(state.opt_state.count) == 1


class StateWithStats(amc_jax.TrainState):
  batch_stats: Any = None


def test_fields_are_replaced_and_other_kwargs_forwarded():
  state = StateWithStats.create(
      apply_fn=None, params={"w": jnp.zeros(2)}, tx=TX, batch_stats={"mean": jnp.zeros(2)}
  )
  loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
  new = jax.jit(lambda s: s.apply_loss(loss, batch_stats={"mean": jnp.ones(2)}))(state)
  assert isinstance(new, StateWithStats)
  chex.assert_trees_all_equal(new.batch_stats, {"mean": jnp.ones(2)})
  assert int(new.opt_state.count) == 1
  with pytest.raises(TypeError, match="computes step itself"):
    state.apply_loss(loss, step=3)
  with pytest.raises(TypeError, match="value_fn must be callable"):
    state.apply_loss(1.0)
  with pytest.raises(TypeError, match="need the loss"):
    state.apply_gradients()


def test_vmap_over_an_ensemble_of_train_states():
  n_chains, n_steps = 3, 30
  tx = TX
  model = MODEL
  keys = jax.random.split(jax.random.key(1), n_chains)
  params = jax.vmap(lambda k: model.init(k, X))(keys)
  ensemble = jax.vmap(
      lambda p: amc_jax.TrainState.create(apply_fn=model.apply, params=p, tx=tx)
  )(params)
  ensemble = ensemble.replace(opt_state=amc_jax.init_ensemble(tx, params, jax.random.key(5)))
  initial_keys = ensemble.opt_state.key
  run = jax.jit(jax.vmap(amc_step))
  for _ in range(n_steps):
    ensemble = run(ensemble)
  np.testing.assert_array_equal(ensemble.step, np.full(n_chains, n_steps))
  losses = ensemble.opt_state.loss
  assert losses.shape == (n_chains,) and len(set(np.asarray(losses).tolist())) == n_chains

  # Chain k is the single chain started from its params and key.
  k = 2
  single = jax.tree_util.tree_map(lambda x: x[k], ensemble)
  start = amc_jax.TrainState.create(
      apply_fn=model.apply, params=jax.tree_util.tree_map(lambda x: x[k], params), tx=tx
  )
  start = start.replace(opt_state=start.opt_state._replace(key=initial_keys[k]))
  for _ in range(n_steps):
    start = amc_step(start)
  chex.assert_trees_all_close(start.params, single.params, rtol=1e-6, atol=1e-7)
  assert int(start.opt_state.n_accept) == int(single.opt_state.n_accept)


# --- flax.nnx --------------------------------------------------------------


class NNXMLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(1, 8, rngs=rngs)
    self.out = nnx.Linear(8, 1, rngs=rngs)
    self.calls = nnx.Variable(jnp.zeros((), jnp.int32))  # written by __call__

  def __call__(self, x):
    self.calls[...] += 1
    return self.out(jnp.tanh(self.hidden(x)))


def nnx_loss(model):
  return jnp.mean((model(X) - Y) ** 2)


@nnx.jit
def nnx_step(model, optimizer):
  optimizer.update(model, None, value_fn=amc_jax.nnx_value_fn(model, nnx_loss))


def test_nnx_optimizer_trains_an_mlp_with_amc_eager_and_jitted():
  model = NNXMLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)
  assert isinstance(optimizer.opt_state, amc_jax.AMCState)
  initial = float(nnx.jit(nnx_loss)(model))
  calls = int(model.calls[...])

  # Eager: grads=None is accepted by nnx.Optimizer.update (an empty state).
  optimizer.update(model, None, value_fn=amc_jax.nnx_value_fn(model, nnx_loss))
  assert int(optimizer.opt_state.count[...]) == 1
  for _ in range(N_STEPS):
    nnx_step(model, optimizer)
  assert int(optimizer.step[...]) == N_STEPS + 1
  assert isinstance(optimizer.opt_state, amc_jax.AMCState)
  assert int(optimizer.opt_state.count[...]) == N_STEPS + 1
  # What loss_fn writes into the merged model does not reach the real one.
  assert int(model.calls[...]) == calls
  final = float(nnx.jit(nnx_loss)(model))
  assert final < 0.5 * initial
  # The cached loss is the loss of the model's current params.
  assert float(optimizer.opt_state.loss[...]) == final


def test_nnx_optimizer_is_bit_identical_to_tx_update_on_the_param_state():
  tx = TX
  model = NNXMLP(nnx.Rngs(1))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.as_pure(params)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  opt_state = tx.init(params)

  @jax.jit
  def by_hand(params, opt_state):
    value_fn = lambda p: nnx_loss(nnx.merge(graphdef, p, rest, copy=True))
    updates, opt_state = tx.update(None, opt_state, params, value_fn=value_fn)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(30):
    nnx_step(model, optimizer)
    params, opt_state = by_hand(params, opt_state)
  assert_trees_equal(nnx.as_pure(nnx.state(model, nnx.Param)), params)
  assert_trees_equal(nnx.as_pure(optimizer.opt_state), opt_state)


def test_nnx_value_fn_errors():
  model = NNXMLP(nnx.Rngs(0))
  with pytest.raises(TypeError, match="loss_fn must be callable"):
    amc_jax.nnx_value_fn(model, 3.0)
