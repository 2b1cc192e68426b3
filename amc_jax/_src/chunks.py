"""The compiled programs of :func:`amc_jax.fit`: the chunk (``log_every``-step
windows of a jitted ``lax.scan``), the re-basing of the cached loss, the
state's initialisation, progressive batching's error and minibatch.

Each is a module-level ``jax.jit`` whose static arguments are the
transformation and the loss (held by identity, :class:`Ref`) in a
:class:`Spec`, so a second :func:`fit` with the same ``tx`` and ``loss_fn``
(resuming, or a benchmark repeat) compiles nothing. jit's cache holds on to
them until ``jax.clear_caches()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from amc_jax._src import amc as amc_lib
from amc_jax._src import base
from amc_jax._src import ensemble as ensemble_lib
from amc_jax._src import state as state_lib
from amc_jax._src import trees

PyTree = Any


class Ref:
  """Hashes and compares by identity, so any object can be a static jit argument."""

  __slots__ = ("obj",)

  def __init__(self, obj):
    self.obj = obj

  def __hash__(self):
    return id(self.obj)

  def __eq__(self, other):
    return isinstance(other, Ref) and other.obj is self.obj


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything about a chunk that is fixed at compile time."""

  tx: Ref
  loss_fn: Ref
  # "none": loss_fn(params); "full": a fixed batch; "minibatch"; "sequential":
  # the sequential test over the shuffled data, in chunks; "key":
  # loss_fn(params, key) with a fresh key per step (random_loss=True).
  mode: str
  batch_size: int  # minibatch size in "minibatch" mode, units per chunk in "sequential", else 0
  monte_carlo: bool
  extra_args: bool  # the (gradient) tx takes value=, grad=, value_fn=
  ensemble: bool
  # tx itself owns a leading replica axis (replica_exchange, population,
  # population_annealing): its state's loss has one entry per replica.
  replicas: bool = False
  # loss_fn returns per-example losses: the loss of a batch is their mean.
  per_example: bool = False
  # "sequential" with a mean-form loss_fn: each unit of the test is the mean
  # loss of a group of this many rows (0: the units are examples).
  group: int = 0
  # Per-example loss evaluations that make one pass over the data (1 without data).
  pass_size: int = 1


def _mean_loss(spec: "Spec", loss_fn: Callable) -> Callable:
  if not spec.per_example:
    return loss_fn
  return lambda *args: jnp.mean(loss_fn(*args))


def _chunk_fn(spec: "Spec", data: PyTree) -> Callable[[PyTree, jax.Array], jax.Array]:
  """The sequential test's ``chunk_fn`` over the shuffled, chunk-laid data."""
  loss_fn, size = spec.loss_fn.obj, spec.batch_size

  def chunk_fn(params, c):
    rows = jax.tree_util.tree_map(
        lambda x: lax.dynamic_slice_in_dim(x, c * size, size), data
    )
    if spec.group:  # a mean-form loss, one mean per group of rows
      return jax.vmap(lambda g: loss_fn(params, g))(rows)
    return loss_fn(params, rows)

  return chunk_fn


def _value_fn(spec: Spec, batch: PyTree) -> Callable[[PyTree], jax.Array]:
  loss_fn = _mean_loss(spec, spec.loss_fn.obj)
  if spec.mode == "none":
    return loss_fn
  return lambda params: loss_fn(params, batch)


def _step_passes(spec: Spec, opt_state, batch: PyTree) -> jax.Array:
  """Data passes of one step: per-example loss evaluations / examples."""
  dtype = base.loss_dtype()
  if spec.mode == "sequential":
    evaluated = state_lib.monte_carlo_state(opt_state).sequential.evaluated
    return evaluated.astype(dtype) / spec.pass_size
  if spec.mode == "full":  # all the data, or progressive batching's minibatch
    per_step = jax.tree_util.tree_leaves(batch)[0].shape[0]
  else:
    per_step = spec.batch_size if spec.mode == "minibatch" else 1
  if spec.monte_carlo and spec.mode in ("minibatch", "key"):
    per_step *= 2  # U(x) and U(x') on the step's minibatch (or key)
  return jnp.asarray(per_step / spec.pass_size, dtype)


def _chain_step(spec: Spec, params, opt_state, batch):
  """One step of one chain. Returns (params, state, loss, accepted, sigma, passes)."""
  tx = spec.tx.obj
  dtype = base.loss_dtype()
  if spec.mode == "sequential":
    updates, opt_state = tx.update(None, opt_state, params, chunk_fn=_chunk_fn(spec, batch))
    state = state_lib.monte_carlo_state(opt_state)
    params = optax.apply_updates(params, updates)
    return (
        params, opt_state, state.loss.astype(dtype), state.info.accepted,
        state.sigma.astype(dtype), _step_passes(spec, opt_state, batch),
    )
  value_fn = _value_fn(spec, batch)
  if spec.monte_carlo:
    if spec.mode in ("minibatch", "key"):
      # Both losses on this step's minibatch (or key: common random numbers): right whatever the mode of tx (a
      # batch-mode cache holds U(x) on the previous minibatch), and as cheap
      # as minibatch=True (two evaluations per step).
      value = (jax.vmap(value_fn) if spec.replicas else value_fn)(params)
    else:
      # Same data every step: U(x) is the state's loss, which fit re-based on
      # this data before the first step. Passing it keeps every step at one
      # evaluation for any tx, minibatch=True included, and keeps the step's
      # first-evaluation loop out of the program: under vmap XLA:CPU runs that
      # loop's loss evaluation on every step (a second one per chain).
      cached = state_lib.monte_carlo_state(opt_state)
      value = cached.loss if cached.scales is None else (cached.loss, cached.scales)
    updates, opt_state = tx.update(None, opt_state, params, value_fn=value_fn, value=value)
    state = state_lib.monte_carlo_state(opt_state)
    loss, accepted, sigma = state.loss, state.info.accepted, state.sigma
  else:
    loss, grads = jax.value_and_grad(value_fn)(params)
    extra = dict(value=loss, grad=grads, value_fn=value_fn) if spec.extra_args else {}
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    accepted = jnp.zeros([], bool)
    sigma = jnp.full([], jnp.nan, dtype)
  params = optax.apply_updates(params, updates)
  return (
      params, opt_state, jnp.asarray(loss).astype(dtype), accepted, sigma.astype(dtype),
      _step_passes(spec, opt_state, batch),
  )


def _draw_batch(spec: Spec, data: PyTree, data_key: jax.Array, t: jax.Array) -> PyTree:
  """The data of global step ``t``.

  Minibatches are ``batch_size`` indices drawn uniformly with replacement,
  ``jax.random.randint(jax.random.fold_in(data_key, t), ...)``, gathered from
  the data held on device: O(batch_size) work per step, independent batches,
  and the batch of step ``t`` depends on neither the chunking nor the
  optimizer's keys.
  """
  if spec.mode == "key":
    return jax.random.fold_in(data_key, t)
  if spec.mode != "minibatch":
    return data
  n = jax.tree_util.tree_leaves(data)[0].shape[0]
  idx = jax.random.randint(jax.random.fold_in(data_key, t), (spec.batch_size,), 0, n)
  return jax.tree_util.tree_map(
      lambda x: x.at[idx].get(mode="promise_in_bounds"), data
  )


def _run_chunk_impl(params, opt_state, data, data_key, steps, *, spec: Spec):
  """Runs the steps ``steps`` (int32 ``[rows, log_every]``); one row per window."""
  step = lambda p, s, b: _chain_step(spec, p, s, b)
  if spec.ensemble:
    step = jax.vmap(step, in_axes=(0, 0, None))  # chains share the minibatch
  many = spec.ensemble or spec.replicas
  lead = jax.tree_util.tree_leaves(params)[0].shape[:1] if many else ()
  dtype = base.loss_dtype()

  def one_step(carry, t):
    params, opt_state, n_accept, _, _, passes = carry
    batch = _draw_batch(spec, data, data_key, t)
    params, opt_state, loss, accepted, sigma, step_passes = step(params, opt_state, batch)
    n_accept = n_accept + accepted.astype(jnp.int32)
    return (params, opt_state, n_accept, loss, sigma, passes + step_passes), None

  def window(carry, ts):
    params, opt_state = carry
    init = (
        params,
        opt_state,
        jnp.zeros(lead, jnp.int32),
        jnp.zeros(lead, dtype),
        jnp.zeros(lead, dtype),
        jnp.zeros(lead, dtype),
    )
    (params, opt_state, n_accept, loss, sigma, passes), _ = lax.scan(one_step, init, ts)
    if spec.monte_carlo:
      rate = n_accept.astype(dtype) / jnp.asarray(ts.shape[0], dtype)
    else:
      rate = jnp.full(lead, jnp.nan, dtype)
    rows = {"loss": loss, "acceptance": rate, "sigma": sigma, "passes": passes}
    return (params, opt_state), rows

  (params, opt_state), rows = lax.scan(window, (params, opt_state), steps)
  return params, opt_state, rows


# params and opt_state are donated: XLA reuses their buffers for the chunk's
# outputs, so a chunk holds one copy of them, not two. fit copies what the
# caller passed in once (the caller's arrays stay valid).
run_chunk = jax.jit(
    _run_chunk_impl, static_argnames=("spec",), donate_argnames=("params", "opt_state")
)


def _rebase_impl(params, opt_state, batch, *, spec: Spec, reset: bool):
  """Re-bases every AMCState's cached loss on ``batch``; optionally resets aMC.

  Full-batch chunks pass the state's loss as ``value=``, so it must be U(x) of
  the current params on the chunk's data, also before the first step (where
  ``tx.init`` leaves it at inf). The reset takes sigma0 from a fresh
  ``tx.init``, so it works for any way of building ``tx`` (chains,
  ``inject_hyperparams``).
  """
  tx = spec.tx.obj

  def one_chain(params, opt_state):
    with_scales = any(s.scales is not None for s in state_lib.monte_carlo_states(opt_state))

    def evaluate(p):
      return amc_lib.evaluate(_value_fn(spec, batch), p, with_scales, "loss_fn(params, batch)")

    # A transformation with its own replica axis holds one loss per replica.
    loss, scales = (jax.vmap(evaluate) if spec.replicas else evaluate)(params)
    fresh = tx.init(params) if reset else opt_state

    def rebase(state, new):
      state = state._replace(loss=loss)
      if state.scales is not None:
        state = state._replace(scales=scales)
      if reset:
        state = state._replace(
            sigma=new.sigma, mu=new.mu, n_reject=jnp.zeros_like(state.n_reject)
        )
      return state

    return state_lib.replace_monte_carlo_states(rebase, opt_state, fresh)

  if spec.ensemble:
    one_chain = jax.vmap(one_chain)
  return one_chain(params, opt_state)


rebase = jax.jit(_rebase_impl, static_argnames=("spec", "reset"))


def _init_state_impl(params, *, tx: Ref, ensemble: bool):
  """``tx.init``, or the ensemble's state: compiled once per tx and shapes.

  Ensembles of Monte Carlo chains are seeded by :func:`~amc_jax.init_ensemble`
  from the key that ``tx.init`` gives a single chain (the seed of ``tx``).
  """
  tx = tx.obj
  if not ensemble:
    return tx.init(params)
  single = state_lib.monte_carlo_states(tx.init(trees.take(params, 0)))
  if not single:
    return jax.vmap(tx.init)(params)
  return ensemble_lib.init_ensemble(tx, params, single[0].key)


init_state = jax.jit(_init_state_impl, static_argnames=("tx", "ensemble"))


def _errors_impl(params, batch, *, error_fn: Ref, ensemble: bool):
  """The progressive-batching error, per chain (or replica) when there are several."""
  fn = lambda p: jnp.asarray(error_fn.obj(p, batch)).astype(base.loss_dtype())
  return jax.vmap(fn)(params) if ensemble else fn(params)


errors = jax.jit(_errors_impl, static_argnames=("error_fn", "ensemble"))


def _first_rows_impl(data, order, *, size: int):
  return jax.tree_util.tree_map(lambda x: jnp.take(x, order[:size], axis=0), data)


# One compile per minibatch size, like the chunks that use the minibatch.
first_rows = jax.jit(_first_rows_impl, static_argnames=("size",))


