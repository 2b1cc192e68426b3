"""Ensembles of independent chains: one state per chain, vmapped updates."""

from __future__ import annotations

from typing import Any

import jax
import optax

from amc_jax._src import base
from amc_jax._src import state as state_lib
from amc_jax._src import trees

PyTree = Any


def init_ensemble(
    tx: optax.GradientTransformation, params: PyTree, key: base.PRNGKeyLike
) -> Any:
  """Initialises one independent chain per entry of the leading axis of ``params``.

  The state is ``jax.vmap(tx.init)(params)`` with the key of every
  :class:`~amc_jax.AMCState` inside it (``tx`` may be an ``optax.chain`` or an
  ``optax.inject_hyperparams`` wrapper) replaced by ``jax.random.split(key, M)``:
  chain ``k`` gets key ``k``. ``jax.vmap(tx.update)`` over params and state then
  runs ``M`` independent chains in one program, and chain ``k`` follows exactly
  the trajectory of a single chain started from chain ``k``'s params and key.

  Args:
    tx: a transformation whose state contains an :class:`~amc_jax.AMCState`.
    params: a pytree whose leaves all carry a leading chain axis of size M.
    key: an int or a ``jax.random.key``.

  Returns:
    The ensemble state, every leaf with the leading chain axis.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> tx = amc_jax.amc(sigma0=0.1, epsilon=0.1)
    >>> params = jnp.zeros((8, 3))  # 8 chains of 3 parameters
    >>> state = amc_jax.init_ensemble(tx, params, jax.random.key(0))
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> step = jax.jit(jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=loss)))
    >>> updates, state = step(params, state)
    >>> params = optax.apply_updates(params, updates)
    >>> state.sigma.shape
    (8,)
  """
  n_chains = trees.leading_size(params, "params", "(the chain axis of init_ensemble)")
  if n_chains < 1:
    raise ValueError("init_ensemble needs at least one chain; got 0.")
  key = base.as_key(key, "key")
  state = jax.vmap(tx.init)(params)
  found = []

  def replace_key(node):
    if not isinstance(node, state_lib.AMCState):
      return node
    index = len(found)
    found.append(index)
    sub = key if index == 0 else jax.random.fold_in(key, index)
    return node._replace(key=jax.random.split(sub, n_chains))

  state = state_lib.replace_monte_carlo_states(replace_key, state)
  if not found:
    raise ValueError(
        "init_ensemble found no AMCState in the state of tx; it seeds the chains"
        " of amc_jax transformations (amc, metropolis) only."
    )
  return state
