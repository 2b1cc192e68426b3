"""Replica exchange and populations: transformations that wrap a transformation.

Each of :func:`replica_exchange`, :func:`population` and
:func:`population_annealing` takes a Monte Carlo transformation ``tx``
(:func:`~amc_jax.amc`, :func:`~amc_jax.metropolis`, or a chain/wrapper of
one) and returns an ``optax.GradientTransformationExtraArgs`` whose params
carry a leading replica (chain) axis. ``update`` steps every replica with
``jax.vmap(tx.update)`` on the ``value_fn`` of ONE replica, exactly as a user
writes it for a single chain, and then does the one thing that couples the
replicas: a swap of temperatures, a cloning of the best chains, or a
resampling. Precedents: blackjax ``smc/base.py`` (vmapped chains, then
resampling), optax ``MultiSteps`` (a transformation wrapping one).

Copies of a chain (cloning, resampling) are made through additive updates,
``target - params``, so a copy lands within one rounding of its original; its
cached loss is evaluated afresh where it landed, so the batch-mode cache
stays exact.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amc_jax._src import amc as amc_lib
from amc_jax._src import base
from amc_jax._src import ensemble
from amc_jax._src import state as state_lib
from amc_jax._src import trees

PyTree = Any


# ---------------------------------------------------------------------------
# Shared parts.


def _check_tx(tx: Any) -> None:
  if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
    raise TypeError(f"tx must be an optax transformation, got {type(tx).__name__}.")


def _n_replicas(params: PyTree, what: str) -> int:
  return trees.leading_size(params, "params", f"(the {what} axis)")


def _init_inner(tx, params: PyTree, key: jax.Array) -> PyTree:
  """One state per replica, every replica with its own key (init_ensemble)."""
  return ensemble.init_ensemble(tx, params, key)


def _check_value_fn(value_fn: Any) -> None:
  if value_fn is None:
    raise TypeError(
        "amc_jax transformations need the loss: pass value_fn=, the loss of ONE"
        " replica's params (it is vmapped over the replicas), as a keyword"
        " argument of tx.update."
    )
  if not callable(value_fn):
    raise TypeError(f"value_fn must be callable, got {type(value_fn).__name__}.")


def _step_all(tx, params, inner, value_fn, value, temperatures=None):
  """``jax.vmap(tx.update)`` over the replicas (with per-replica temperatures)."""

  def one(p, s, v, t):
    kwargs = {}
    if t is not None:
      kwargs["temperature"] = t
    return tx.update(None, s, p, value_fn=value_fn, value=v, **kwargs)

  v_axis = None if value is None else 0
  t_axis = None if temperatures is None else 0
  return jax.vmap(one, in_axes=(0, 0, v_axis, t_axis))(params, inner, value, temperatures)


def _losses(inner: PyTree) -> jax.Array:
  """The cached U of every replica's current params, NaN as +inf."""
  loss = state_lib.monte_carlo_state(inner).loss
  return jnp.where(jnp.isnan(loss), jnp.inf, loss)


def _apply(params: PyTree, updates: PyTree) -> PyTree:
  return optax.apply_updates(params, updates)


def _copy(
    params: PyTree,
    updates: PyTree,
    inner: PyTree,
    source: jax.Array,
    copied: jax.Array,
    key: jax.Array,
    value_fn: Callable[[PyTree], Any],
) -> tuple[PyTree, PyTree]:
  """Replica r becomes a copy of replica ``source[r]`` (after this step's updates).

  Returns the updates that take ``params`` there and the states, copied whole
  (the proposal's state, sigma, counters, cached loss), with fresh keys for
  the copies (``copied``) so that they diverge. The cached loss (and
  signal-norm lambdas) of a copy is evaluated where its params land.
  """
  moved = _apply(params, updates)
  target = trees.take(moved, source)

  def pick(new, old):
    mask = copied.reshape(copied.shape + (1,) * (jnp.ndim(new) - 1))
    return jnp.where(mask, new, old)

  updates = jax.tree_util.tree_map(
      lambda t, p, u: pick((t - p).astype(u.dtype), u), target, params, updates
  )
  landed = _apply(params, updates)
  inner = trees.take(inner, source)
  fresh = jax.random.split(key, copied.shape[0])

  def recache(state: state_lib.AMCState) -> state_lib.AMCState:
    with_scales = state.scales is not None
    loss, scales = jax.vmap(
        lambda p: amc_lib.evaluate(value_fn, p, with_scales, "value_fn(params)")
    )(landed)
    state = state._replace(
        key=jnp.where(copied, fresh, state.key),
        loss=jnp.where(copied, loss, state.loss),
    )
    if scales is not None:
      state = state._replace(scales=jax.tree_util.tree_map(pick, scales, state.scales))
    return state

  return updates, state_lib.replace_monte_carlo_states(recache, inner)


def _coupled(
    tx: Any,
    seed: base.PRNGKeyLike,
    what: str,
    *,
    init_extra: Callable[[int, jax.Array, PyTree], Any],
    couple: Callable[..., tuple[PyTree, Any]],
    temperatures: Optional[Callable[[Any, int], jax.Array]] = None,
) -> optax.GradientTransformationExtraArgs:
  """The scaffold of a method that couples replicas of ``tx``.

  ``init`` gives every replica (the params' leading ``what`` axis, M) its own
  state of ``tx`` (:func:`~amc_jax.init_ensemble` from ``seed``) and hands
  ``(M, key, inner)`` to ``init_extra``, which builds the method's state.
  ``update`` steps every replica with ``tx`` (at ``temperatures(state, M)``,
  if given) and hands ``(state, params, updates, inner, value_fn)`` to
  ``couple``, which swaps, clones or resamples and returns ``(updates, new
  state)``. The methods below are configurations of it, the way
  :func:`~amc_jax.metropolis` configures :func:`~amc_jax.amc`.
  """
  _check_tx(tx)
  if base.is_concrete(seed):
    base.as_key(seed)

  def init_fn(params):
    key = base.as_key(seed)
    return init_extra(_n_replicas(params, what), key, _init_inner(tx, params, key))

  def update_fn(updates, state, params=None, *, value_fn=None, value=None, **extra):
    del updates, extra
    _check_value_fn(value_fn)
    temps = None if temperatures is None else temperatures(state, _n_replicas(params, what))
    updates, inner = _step_all(tx, params, state.inner, value_fn, value, temps)
    return couple(state, params, updates, inner, value_fn)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def is_coupled_state(opt_state: PyTree) -> bool:
  """Whether an optimizer state holds the state of a replica method
  (:func:`replica_exchange`, :func:`population`, :func:`population_annealing`):
  their state classes carry the marker ``coupled_replicas = True``."""
  marked = lambda x: getattr(type(x), "coupled_replicas", False) is True
  return any(marked(x) for x in jax.tree_util.tree_leaves(opt_state, is_leaf=marked))


# ---------------------------------------------------------------------------
# Replica exchange.


class ReplicaExchangeState(NamedTuple):
  """State of :func:`replica_exchange`.

  Attributes:
    inner: the wrapped transformation's state, every leaf with the replica
      axis.
    temperature_index: int32 ``[R]``: replica ``r`` runs at
      ``temperatures[temperature_index[r]]``. Swaps exchange these indices
      (equivalent to exchanging configurations, and exact: the params and
      every replica's cached loss stay where they are).
    key: PRNG key of the swap tests.
    count: steps taken.
    swap_attempts: int32 ``[R - 1]``: swaps tried between temperatures ``i``
      and ``i + 1``.
    swap_accepts: int32 ``[R - 1]``: swaps accepted between them.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.replica_exchange(amc_jax.metropolis(0.5), temperatures=(0.1, 1.0, 10.0))
    >>> state = tx.init(jnp.zeros((3, 1)))     # 3 replicas of 1 parameter
    >>> state.temperature_index.tolist(), state.swap_acceptance.shape
    ([0, 1, 2], (2,))
  """

  coupled_replicas = True  # the marker fit reads (is_coupled_state)

  inner: PyTree
  temperature_index: jax.Array
  key: jax.Array
  count: jax.Array
  swap_attempts: jax.Array
  swap_accepts: jax.Array

  @property
  def swap_acceptance(self) -> jax.Array:
    """Accepted / attempted swaps per neighbouring pair of temperatures (NaN before any)."""
    tried = self.swap_attempts.astype(jnp.float32)
    rate = self.swap_accepts.astype(jnp.float32) / jnp.maximum(tried, jnp.float32(1))
    return jnp.where(tried > 0, rate, jnp.float32(jnp.nan))


def _check_temperatures(temperatures: Any, what: str, *, positive: bool, increasing: bool) -> np.ndarray:
  if callable(temperatures):
    raise TypeError(f"{what} must be a sequence of numbers, not a schedule.")
  t = np.asarray(temperatures, dtype=np.float64)
  if t.ndim != 1 or t.size < (2 if increasing else 1):
    raise ValueError(
        f"{what} must be a flat sequence of at least {2 if increasing else 1}"
        f" temperatures, got {temperatures!r}."
    )
  if not np.all(np.isfinite(t)) or np.any(t < 0) or (positive and np.any(t <= 0)):
    bound = "> 0" if positive else ">= 0"
    raise ValueError(f"{what} must be finite and {bound}, got {temperatures!r}.")
  if increasing and np.any(np.diff(t) <= 0):
    raise ValueError(f"{what} must be strictly increasing (coldest first), got {temperatures!r}.")
  return t


def swap_pass(
    key: jax.Array,
    losses: jax.Array,
    temperature_index: jax.Array,
    temperatures: jax.Array,
    parity: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""One pass of neighbour swaps between the pairs ``(i, i + 1)`` with ``i % 2 == parity``.

  Replicas ``a`` at temperature :math:`T_i` and ``b`` at :math:`T_{i+1}`
  exchange temperatures with probability

  .. math::
    \min\big(1, e^{(1/T_i - 1/T_{i+1})(U_a - U_b)}\big),

  which keeps the product of the Boltzmann distributions invariant. At
  :math:`T_i = 0` a swap is accepted iff :math:`U_a \ge U_b`.

  Returns:
    ``(temperature_index, attempted, accepted)``, the last two boolean
    ``[R - 1]`` per pair.
  """
  n = temperature_index.shape[0]
  at = jnp.zeros_like(temperature_index).at[temperature_index].set(jnp.arange(n, dtype=jnp.int32))
  pairs = jnp.arange(n - 1)
  attempted = (pairs % 2) == parity
  beta = jnp.where(temperatures > 0, 1.0 / jnp.where(temperatures > 0, temperatures, 1.0), jnp.inf)
  u_cold, u_hot = losses[at[:-1]], losses[at[1:]]
  d_beta = beta[:-1] - beta[1:]
  d_u = u_cold - u_hot
  log_p = d_beta * d_u
  # inf * 0 (a zero temperature and equal losses, or two infinite losses): swap.
  log_p = jnp.where(jnp.isnan(log_p), jnp.zeros_like(log_p), log_p)
  u = jax.random.uniform(key, (n - 1,), losses.dtype)
  accepted = attempted & (jnp.log(u) < log_p)
  left = jnp.concatenate([accepted, jnp.zeros((1,), bool)])  # position j swaps with j + 1
  right = jnp.concatenate([jnp.zeros((1,), bool), accepted])  # position j swaps with j - 1
  positions = jnp.arange(n)
  partner = jnp.where(left, positions + 1, jnp.where(right, positions - 1, positions))
  new_at = at[partner]
  new_index = jnp.zeros_like(temperature_index).at[new_at].set(jnp.arange(n, dtype=jnp.int32))
  return new_index, attempted, accepted


def replica_exchange(
    tx: optax.GradientTransformation,
    temperatures: Sequence[float],
    *,
    swap_every: int = 1,
    seed: base.PRNGKeyLike = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Replica exchange (parallel tempering) over ``len(temperatures)`` replicas.

  The params carry a leading replica axis of size ``R = len(temperatures)``
  (temperatures strictly increasing, coldest first, >= 0). Each update steps
  every replica with ``tx`` at its own temperature (through
  ``tx.update(..., temperature=T)``), then, every ``swap_every`` steps,
  neighbouring temperatures ``(i, i + 1)`` swap their replicas with
  probability :math:`\min(1, e^{(1/T_i - 1/T_{i+1})(U_a - U_b)})`, the even
  pairs on one swap round and the odd pairs on the next (:func:`swap_pass`).
  :math:`U` is each replica's loss after its step (the batch-mode cache).

  A swap exchanges temperatures, not params: the replica at temperature
  ``i`` is ``state.temperature_index == i``, and :func:`coldest_replica`
  returns the answer, the replica now at the coldest temperature. Each
  replica's own state (aMC's sigma and mu, its cached loss) stays with its
  configuration. ``state.swap_acceptance`` is the acceptance rate per pair.

  Args:
    tx: a Monte Carlo transformation (:func:`~amc_jax.metropolis`,
      :func:`~amc_jax.amc`), whose ``temperature=`` extra argument sets each
      replica's temperature.
    temperatures: the ladder, coldest first.
    swap_every: steps between swap rounds (>= 1).
    seed: an int or a ``jax.random.key``; the replicas' keys are split from
      it (chain ``r`` as in :func:`~amc_jax.init_ensemble`), and the swaps
      draw from a key folded from it.

  Returns:
    An ``optax.GradientTransformationExtraArgs``:
    ``update(updates, state, params, *, value_fn, value=None)`` with
    ``value_fn`` the loss of one replica's params.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> double_well = lambda x: jnp.sum((x**2 - 1.0) ** 2) * 4.0
    >>> tx = amc_jax.replica_exchange(
    ...     amc_jax.metropolis(0.5), temperatures=(0.1, 0.4, 1.6), seed=0)
    >>> params = jnp.full((3, 1), -1.0)  # 3 replicas of 1 parameter
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=double_well))
    >>> for _ in range(200):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> amc_jax.coldest_replica(params, state).shape, state.swap_acceptance.shape
    ((1,), (2,))

  References:
    Swendsen, Wang, Replica Monte Carlo simulation of spin glasses, Phys. Rev.
    Lett. 57, 2607 (1986); Hukushima, Nemoto, Exchange Monte Carlo method and
    application to spin glass simulations, J. Phys. Soc. Jpn. 65, 1604 (1996).
  """
  ladder = _check_temperatures(temperatures, "temperatures", positive=False, increasing=True)
  base.check_count("swap_every", swap_every)
  n = ladder.size
  t = lambda: jnp.asarray(ladder, base.loss_dtype())

  def init_extra(m, key, inner):
    if m != n:
      raise ValueError(
          f"replica_exchange has {n} temperatures but the params' leading"
          f" (replica) axis has size {m}."
      )
    return ReplicaExchangeState(
        inner=inner,
        temperature_index=jnp.arange(n, dtype=jnp.int32),
        key=jax.random.fold_in(key, n),
        count=jnp.zeros([], jnp.int32),
        swap_attempts=jnp.zeros([n - 1], jnp.int32),
        swap_accepts=jnp.zeros([n - 1], jnp.int32),
    )

  def couple(state, params, updates, inner, value_fn):
    del params, value_fn
    count = state.count + 1
    key, sub = jax.random.split(state.key)
    swap_round = count // swap_every
    index, attempted, accepted = swap_pass(
        sub, _losses(inner), state.temperature_index, t(), (swap_round - 1) % 2
    )
    do = (count % swap_every) == 0
    return updates, ReplicaExchangeState(
        inner=inner,
        temperature_index=jnp.where(do, index, state.temperature_index),
        key=key,
        count=count,
        swap_attempts=state.swap_attempts + (do & attempted).astype(jnp.int32),
        swap_accepts=state.swap_accepts + (do & accepted).astype(jnp.int32),
    )

  return _coupled(tx, seed, "replica", init_extra=init_extra, couple=couple,
                  temperatures=lambda state, m: t()[state.temperature_index])


def coldest_replica(params: PyTree, state: ReplicaExchangeState) -> PyTree:
  """The params of the replica now at the coldest temperature (the answer).

  Args:
    params: the replica-exchange params (leading replica axis).
    state: a :class:`ReplicaExchangeState` (or a state holding one).

  Returns:
    One replica's params.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.replica_exchange(amc_jax.metropolis(0.5), temperatures=(0.1, 1.0))
    >>> params = jnp.array([[1.0], [2.0]])     # replica 0 starts at T = 0.1
    >>> amc_jax.coldest_replica(params, tx.init(params))
    Array([1.], dtype=float32)
  """
  found = [
      s for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, ReplicaExchangeState))
      if isinstance(s, ReplicaExchangeState)
  ]
  if not found:
    raise ValueError("coldest_replica needs the state of amc_jax.replica_exchange.")
  index = jnp.argmin(found[0].temperature_index)
  return trees.take(params, index)


# ---------------------------------------------------------------------------
# Populations.


class PopulationState(NamedTuple):
  """State of :func:`population`.

  Attributes:
    inner: the wrapped transformation's state, every leaf with the chain axis.
    key: PRNG key for the clones' new keys.
    count: steps taken.
    n_cloned: total number of chains replaced by clones so far.
    source: int32 ``[M]``: at the last cloning, chain ``r`` became a copy of
      chain ``source[r]`` (``r`` itself if it was kept).

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.population(amc_jax.amc(0.1), every=10, fraction=0.5)
    >>> state = tx.init(jnp.zeros((4, 2)))     # 4 chains of 2 parameters
    >>> int(state.n_cloned), state.source.tolist()
    (0, [0, 1, 2, 3])
  """

  coupled_replicas = True  # the marker fit reads (is_coupled_state)

  inner: PyTree
  key: jax.Array
  count: jax.Array
  n_cloned: jax.Array
  source: jax.Array


def clone_sources(losses: jax.Array, n: int) -> jax.Array:
  """Which chain each chain becomes: the ``n`` worst take the ``n`` best.

  Returns int32 ``[M]``: ``source[r] = r`` for a kept chain; the chain of
  ``k``-th highest loss gets the chain of ``k``-th lowest loss (ties broken
  by index).
  """
  m = losses.shape[0]
  order = jnp.argsort(losses, stable=True).astype(jnp.int32)  # best first
  return jnp.arange(m, dtype=jnp.int32).at[order[::-1][:n]].set(order[:n])


def population(
    tx: optax.GradientTransformation,
    *,
    every: int,
    fraction: float = 0.25,
    seed: base.PRNGKeyLike = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""A population of M chains that clones its best (Section II F of the aMC paper).

  The params carry a leading chain axis of size M. The chains step
  independently with ``tx``; every ``every`` steps the ``n = floor(fraction
  M)`` chains of highest loss are replaced by copies of the ``n`` chains of
  lowest loss (the best replaces the worst, the second best the second
  worst, ...), each copy with the whole state of its original (the
  proposal's state such as aMC's mu, sigma, the counters) and a new key, so
  that clones diverge. This is an optimiser (a genetic-style selection), not
  a sampler.

  Args:
    tx: a Monte Carlo transformation.
    every: steps between cloning rounds (>= 1).
    fraction: the fraction of chains replaced, in (0, 0.5].
    seed: an int or a ``jax.random.key``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``;
    ``update(updates, state, params, *, value_fn, value=None)`` with
    ``value_fn`` the loss of one chain's params.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> tx = amc_jax.population(amc_jax.amc(0.1, epsilon=0.1), every=20)
    >>> params = jnp.zeros((8, 2))  # 8 chains
    >>> state = tx.init(params)
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=loss))
    >>> for _ in range(100):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> int(state.n_cloned)
    10
  """
  base.check_count("every", every)
  if not (isinstance(fraction, (int, float)) and 0 < fraction <= 0.5):
    raise ValueError(f"fraction must lie in (0, 0.5], got {fraction!r}.")

  def init_extra(m, key, inner):
    if math.floor(fraction * m) < 1:
      raise ValueError(
          f"population: fraction={fraction} of {m} chains clones no chain;"
          " use more chains or a larger fraction."
      )
    return PopulationState(
        inner=inner,
        key=jax.random.fold_in(key, m),
        count=jnp.zeros([], jnp.int32),
        n_cloned=jnp.zeros([], jnp.int32),
        source=jnp.arange(m, dtype=jnp.int32),
    )

  def couple(state, params, updates, inner, value_fn):
    m = state.source.shape[0]
    n = math.floor(fraction * m)
    count = state.count + 1
    key, sub = jax.random.split(state.key)

    def clone(args):
      updates, inner = args
      source = clone_sources(_losses(inner), n)
      copied = source != jnp.arange(m, dtype=jnp.int32)
      updates, inner = _copy(params, updates, inner, source, copied, sub, value_fn)
      return updates, inner, source

    def keep(args):
      updates, inner = args
      return updates, inner, state.source

    updates, inner, source = jax.lax.cond(
        count % every == 0, clone, keep, (updates, inner)
    )
    cloned = jnp.where(count % every == 0, jnp.int32(n), jnp.int32(0))
    return updates, PopulationState(inner, key, count, state.n_cloned + cloned, source)

  return _coupled(tx, seed, "chain", init_extra=init_extra, couple=couple)


class PopulationAnnealingState(NamedTuple):
  """State of :func:`population_annealing`.

  Attributes:
    inner: the wrapped transformation's state, every leaf with the replica axis.
    key: PRNG key of the resampling.
    count: steps taken.
    stage: index into ``temperatures`` of the temperature of the next step.
    log_z: :math:`\\ln Z(T_\\text{now}) - \\ln Z(T_\\text{first})`, the
      free-energy estimate accumulated at every change of temperature.
    temperature: the temperature of the next step.
    source: int32 ``[M]``: at the last resampling, slot ``r`` received a copy
      of replica ``source[r]``.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.population_annealing(amc_jax.metropolis(0.5), temperatures=(2.0, 1.0),
    ...                                   steps_per_temperature=5)
    >>> state = tx.init(jnp.zeros((8, 1)))     # 8 replicas of 1 parameter
    >>> int(state.stage), float(state.temperature), float(state.log_z)
    (0, 2.0, 0.0)
  """

  coupled_replicas = True  # the marker fit reads (is_coupled_state)

  inner: PyTree
  key: jax.Array
  count: jax.Array
  stage: jax.Array
  log_z: jax.Array
  temperature: jax.Array
  source: jax.Array


def annealing_weights(
    losses: jax.Array, temperature: jax.Array, next_temperature: jax.Array
) -> tuple[jax.Array, jax.Array]:
  r"""Log weights :math:`-(1/T' - 1/T) U_r` and :math:`\ln \frac{1}{M}\sum_r w_r`.

  The second is the estimate of :math:`\ln Z(T') - \ln Z(T)`, since
  :math:`Z(T')/Z(T) = E_T[e^{-(1/T' - 1/T) U}]`. A non-finite loss has
  weight 0.
  """
  d_beta = 1.0 / next_temperature - 1.0 / temperature
  log_w = jnp.where(jnp.isfinite(losses), -d_beta * losses, -jnp.inf)
  log_mean_w = jax.nn.logsumexp(log_w) - jnp.log(jnp.asarray(losses.shape[0], log_w.dtype))
  return log_w, log_mean_w


def systematic_resample(key: jax.Array, log_weights: jax.Array) -> jax.Array:
  """Indices of a systematic resampling of ``len(log_weights)`` particles.

  One uniform ``u``; particle ``i`` is copied into the slots whose points
  ``(u + k) / M`` fall in its share of the cumulative weight. Each particle
  is copied ``floor(M w_i)`` or ``ceil(M w_i)`` times (Kitagawa 1996).
  """
  m = log_weights.shape[0]
  w = jax.nn.softmax(log_weights)
  cumulative = jnp.cumsum(w)
  cumulative = cumulative.at[-1].set(1.0)  # no point may fall past the end
  points = (jax.random.uniform(key, (), w.dtype) + jnp.arange(m, dtype=w.dtype)) / m
  return jnp.searchsorted(cumulative, points, side="right").astype(jnp.int32).clip(0, m - 1)


def population_annealing(
    tx: optax.GradientTransformation,
    temperatures: Sequence[float],
    *,
    steps_per_temperature: int,
    seed: base.PRNGKeyLike = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Population annealing (Hukushima and Iba 2003; Machta 2010).

  A population of M replicas (the params' leading axis; ideally drawn from
  the Boltzmann distribution at the first temperature) is stepped with ``tx``
  for ``steps_per_temperature`` steps at each temperature of ``temperatures``
  in turn (first, the hottest, to last; > 0). At each change of temperature
  :math:`T \to T'` every replica is reweighted by
  :math:`w_r = e^{-(1/T' - 1/T) U_r}`, the population is resampled to the
  same size (:func:`systematic_resample`; copies take their original's whole
  state and a new key), and

  .. math::
    \ln Z(T') - \ln Z(T) \approx \ln \tfrac{1}{M} \textstyle\sum_r w_r

  is added to ``state.log_z``, which so estimates
  :math:`\ln Z(T_\text{now}) - \ln Z(T_\text{first})` with
  :math:`Z(T) = \int e^{-U(x)/T} dx`. After the last stage the population
  keeps stepping at the last temperature.

  Args:
    tx: a Monte Carlo transformation; its temperature is set per step.
    temperatures: the schedule, one entry per stage.
    steps_per_temperature: steps per stage (>= 1).
    seed: an int or a ``jax.random.key``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``;
    ``update(updates, state, params, *, value_fn, value=None)``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> tx = amc_jax.population_annealing(
    ...     amc_jax.metropolis(0.5), temperatures=(4.0, 2.0, 1.0),
    ...     steps_per_temperature=50)
    >>> params = 2.0 * jax.random.normal(jax.random.key(0), (256, 1))  # from T = 4
    >>> state = tx.init(params)
    >>> energy = lambda x: 0.5 * jnp.sum(x**2)
    >>> step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=energy))
    >>> for _ in range(150):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(abs(state.log_z - 0.5 * jnp.log(1.0 / 4.0)) < 0.15)  # exact: -0.69
    True

  References:
    Hukushima, Iba, Population annealing and its application to a spin glass,
    AIP Conf. Proc. 690, 200 (2003); Machta, Population annealing with
    weighted averages: a Monte Carlo method for rough free-energy landscapes,
    Phys. Rev. E 82, 026704 (2010).
  """
  ladder = _check_temperatures(temperatures, "temperatures", positive=True, increasing=False)
  base.check_count("steps_per_temperature", steps_per_temperature)
  n_stages = ladder.size
  t = lambda: jnp.asarray(ladder, base.loss_dtype())

  def init_extra(m, key, inner):
    dtype = base.loss_dtype()
    return PopulationAnnealingState(
        inner=inner,
        key=jax.random.fold_in(key, m),
        count=jnp.zeros([], jnp.int32),
        stage=jnp.zeros([], jnp.int32),
        log_z=jnp.zeros([], dtype),
        temperature=jnp.asarray(ladder[0], dtype),
        source=jnp.arange(m, dtype=jnp.int32),
    )

  def couple(state, params, updates, inner, value_fn):
    m = state.source.shape[0]
    count = state.count + 1
    key, resample_key, clone_key = jax.random.split(state.key, 3)
    change = ((count % steps_per_temperature) == 0) & (state.stage < n_stages - 1)
    next_stage = jnp.minimum(state.stage + 1, n_stages - 1)

    def anneal(args):
      updates, inner = args
      log_w, log_mean_w = annealing_weights(_losses(inner), t()[state.stage], t()[next_stage])
      source = systematic_resample(resample_key, log_w)
      # A slot that received another replica is a copy, with a new key; a
      # replica that kept its slot keeps its key and its params untouched.
      copied = source != jnp.arange(m, dtype=jnp.int32)
      updates, inner = _copy(params, updates, inner, source, copied, clone_key, value_fn)
      return updates, inner, log_mean_w.astype(state.log_z.dtype), source

    def stay(args):
      updates, inner = args
      return updates, inner, jnp.zeros_like(state.log_z), state.source

    updates, inner, d_log_z, source = jax.lax.cond(change, anneal, stay, (updates, inner))
    stage = jnp.where(change, next_stage, state.stage)
    return updates, PopulationAnnealingState(
        inner=inner,
        key=key,
        count=count,
        stage=stage,
        log_z=state.log_z + d_log_z,
        temperature=t()[stage],
        source=source,
    )

  return _coupled(tx, seed, "replica", init_extra=init_extra, couple=couple,
                  temperatures=lambda state, m: jnp.broadcast_to(state.temperature, (m,)))
