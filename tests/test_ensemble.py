"""Ensembles of independent chains, and the cost of a step in loss evaluations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax


def loss(params):
  return jnp.sum((params["w"] - 1.0) ** 2) + jnp.sum(jnp.sin(3.0 * params["b"]))


def make_params(n_chains):
  keys = jax.random.split(jax.random.key(7), n_chains)
  return {
      "w": jax.vmap(lambda k: jax.random.normal(k, (3, 2)))(keys),
      "b": jnp.zeros((n_chains, 2)),
  }


def vmapped_steps(tx, params, state, n_steps):
  @jax.jit
  def run(params, state):
    def body(carry, _):
      params, state = carry
      updates, state = jax.vmap(
          lambda p, s: tx.update(None, s, p, value_fn=loss)
      )(params, state)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), None, length=n_steps)[0]

  return run(params, state)


@pytest.mark.parametrize(
    "make_tx",
    [
        lambda: amc_jax.amc(0.1, epsilon=0.1, n_reset=10),
        lambda: amc_jax.metropolis(0.1, temperature=0.1),
        lambda: optax.chain(amc_jax.amc(0.1, epsilon=0.1, n_reset=10), optax.scale(1.0)),
    ],
    ids=["amc", "metropolis", "chain"],
)
def test_chain_k_equals_a_single_chain_from_its_key_and_params(make_tx):
  n_chains, n_steps = 5, 60
  tx = make_tx()
  params = make_params(n_chains)
  state = amc_jax.init_ensemble(tx, params, jax.random.key(3))
  final_params, final_state = vmapped_steps(tx, params, state, n_steps)

  def amc_state(s):
    return s[0] if isinstance(s, tuple) and not isinstance(s, amc_jax.AMCState) else s

  for k in [0, 3]:
    single_params = jax.tree_util.tree_map(lambda x: x[k], params)
    single_state = tx.init(single_params)
    key_k = amc_state(state).key[k]
    if isinstance(single_state, amc_jax.AMCState):
      single_state = single_state._replace(key=key_k)
    else:
      single_state = (single_state[0]._replace(key=key_k),) + tuple(single_state[1:])
    p, s = single_params, single_state
    step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=loss))
    for _ in range(n_steps):
      updates, s = step(p, s)
      p = optax.apply_updates(p, updates)
    chex.assert_trees_all_equal(p, jax.tree_util.tree_map(lambda x: x[k], final_params))
    assert int(amc_state(s).n_accept) == int(amc_state(final_state).n_accept[k])
    assert float(amc_state(s).sigma) == float(amc_state(final_state).sigma[k])


def test_chains_differ_from_each_other():
  n_chains = 8
  tx = amc_jax.amc(0.1, epsilon=0.1, n_reset=10)
  # Identical starting params: only the keys can make the chains differ.
  params = jax.tree_util.tree_map(
      lambda x: jnp.broadcast_to(x[0], x.shape), make_params(n_chains)
  )
  state = amc_jax.init_ensemble(tx, params, 0)
  keys = jax.random.key_data(state.key)
  assert len({tuple(np.asarray(k).tolist()) for k in keys}) == n_chains
  final_params, final_state = vmapped_steps(tx, params, state, 50)
  w = np.asarray(final_params["w"]).reshape(n_chains, -1)
  for i in range(n_chains):
    for j in range(i + 1, n_chains):
      assert not np.array_equal(w[i], w[j])
  assert len(set(np.asarray(final_state.n_accept).tolist())) > 1


def test_init_ensemble_rejects_bad_input():
  tx = amc_jax.amc(0.1)
  with pytest.raises(ValueError, match="same leading"):
    amc_jax.init_ensemble(tx, {"a": jnp.zeros((3, 2)), "b": jnp.zeros((4,))}, 0)
  with pytest.raises(ValueError, match="scalar leaf"):
    amc_jax.init_ensemble(tx, {"a": jnp.zeros(())}, 0)
  with pytest.raises(ValueError, match="found no AMCState"):
    amc_jax.init_ensemble(optax.adam(1e-3), jnp.zeros((3, 2)), 0)
  with pytest.raises(TypeError, match="key must be an int or a jax.random.key"):
    amc_jax.init_ensemble(tx, jnp.zeros((3, 2)), 0.5)


def _count_evaluations(tx, n_steps, n_chains=None):
  """Runs n_steps jitted steps and counts how often the loss really ran."""
  calls = []

  def counted_loss(params):
    jax.debug.callback(lambda _: calls.append(1), params["b"][0])
    return loss(params)

  update = lambda p, s: tx.update(None, s, p, value_fn=counted_loss)
  if n_chains is None:
    params = jax.tree_util.tree_map(lambda x: x[0], make_params(1))
    state = tx.init(params)
  else:
    params = make_params(n_chains)
    state = amc_jax.init_ensemble(tx, params, 0)
    update = jax.vmap(update)
  step = jax.jit(update)
  per_step = []
  for _ in range(n_steps):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    jax.effects_barrier()
    per_step.append(len(calls))
    calls.clear()
  return per_step


def test_batch_mode_costs_one_evaluation_per_step_after_the_first():
  assert _count_evaluations(amc_jax.amc(0.1), 6) == [2, 1, 1, 1, 1, 1]


def test_batch_mode_ensemble_costs_one_evaluation_per_chain_step():
  # The first-step evaluation is a loop that runs once, not a cond that a
  # batched predicate would turn into two evaluations on every step.
  assert _count_evaluations(amc_jax.amc(0.1), 4, n_chains=3) == [6, 3, 3, 3]


def test_minibatch_mode_and_value_argument_costs():
  assert _count_evaluations(amc_jax.amc(0.1, minibatch=True), 3) == [2, 2, 2]

  calls = []

  def counted_loss(params):
    jax.debug.callback(lambda _: calls.append(1), params[0])
    return jnp.sum(params**2)

  tx = amc_jax.amc(0.1)
  x = jnp.ones(3)
  step = jax.jit(lambda s, p, v: tx.update(None, s, p, value_fn=counted_loss, value=v))
  state = tx.init(x)
  for _ in range(3):
    updates, state = step(state, x, jnp.sum(x**2))
    x = optax.apply_updates(x, updates)
  jax.effects_barrier()
  assert len(calls) == 3


def test_chains_may_close_over_data_of_their_own_under_a_vmapped_scan():
  """Batch mode with per-chain data (floats and integer labels) closed over
  by the loss, the vmap outside a scan of steps: the cached loss of every
  chain is its loss on its own data, and a chain of chains (nested vmap)
  gives the same numbers."""
  tx = amc_jax.metropolis(0.1)

  def loss_on(p, x, labels):
    return jnp.mean((p["w"][0] * x + p["w"][1] - x) ** 2) + jnp.mean(labels.astype(x.dtype))

  xs = jnp.stack([jnp.linspace(-1, 1, 50), jnp.linspace(0, 2, 50), jnp.linspace(-2, 0, 50)])
  labels = jnp.arange(3, dtype=jnp.int32)[:, None] * jnp.ones((3, 4), jnp.int32)
  params = {"w": jnp.ones((3, 2))}
  states = amc_jax.init_ensemble(tx, params, 0)

  def run(p, s, x, lab):
    def body(carry, _):
      p, s = carry
      u, s = tx.update(None, s, p, value_fn=lambda q: loss_on(q, x, lab))
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (p, s), None, length=5)[0]

  p, s = jax.jit(jax.vmap(run))(params, states, xs, labels)
  expected = jnp.stack([loss_on({"w": p["w"][k]}, xs[k], labels[k]) for k in range(3)])
  np.testing.assert_allclose(s.loss, expected, rtol=1e-6)
  assert int(jnp.sum(s.n_accept)) > 0

  nested = jax.jit(jax.vmap(jax.vmap(run)))
  add_axis = lambda t: jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), t)
  p2, s2 = nested(add_axis(params), add_axis(states), add_axis(xs), add_axis(labels))
  np.testing.assert_array_equal(s2.loss[0], s.loss)
  np.testing.assert_array_equal(s2.loss[1], s.loss)
  chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda x: x[1], p2), p)
