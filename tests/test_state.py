"""amc_jax._src.state: the state, found and rewritten however it is wrapped."""

import jax
import jax.numpy as jnp
import optax
import pytest

import amc_jax
from amc_jax._src import state as state_lib


@pytest.mark.parametrize("wrap", [
    lambda tx: tx,
    lambda tx: optax.chain(optax.clip(1.0), tx),
    lambda tx: optax.inject_hyperparams(amc_jax.amc)(sigma0=0.1),
    lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
], ids=["plain", "chain", "inject_hyperparams", "MultiSteps"])
def test_the_accessor_finds_the_state_however_it_is_wrapped(wrap):
  tx = wrap(amc_jax.amc(0.1))
  state = tx.init(jnp.zeros(3))
  found = amc_jax.monte_carlo_state(state)
  assert isinstance(found, amc_jax.AMCState) and int(found.count) == 0
  assert len(state_lib.monte_carlo_states(state)) == 1
  bumped = state_lib.replace_monte_carlo_states(lambda s: s._replace(count=s.count + 5), state)
  assert int(amc_jax.monte_carlo_state(bumped).count) == 5
  assert jax.tree_util.tree_structure(bumped) == jax.tree_util.tree_structure(state)


def test_no_state_is_a_clear_error():
  with pytest.raises(ValueError, match="holds no AMCState"):
    amc_jax.monte_carlo_state(optax.adam(1e-3).init(jnp.zeros(3)))
  assert state_lib.monte_carlo_states(optax.sgd(1e-3).init(jnp.zeros(3))) == []


def test_two_states_are_rewritten_each_with_its_counterpart():
  tx = optax.chain(amc_jax.amc(0.1, seed=0), amc_jax.amc(0.2, seed=1))
  a, b = tx.init(jnp.zeros(2)), tx.init(jnp.ones(2))
  merged = state_lib.replace_monte_carlo_states(lambda s, o: s._replace(sigma=o.sigma * 10), a, b)
  assert [float(s.sigma) for s in state_lib.monte_carlo_states(merged)] == pytest.approx([1.0, 2.0])
  assert amc_jax.monte_carlo_state(a).proposal_state == ()
