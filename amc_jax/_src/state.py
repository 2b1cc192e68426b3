"""The state of the Monte Carlo transformations, and the one accessor.

:class:`AMCState` (with :class:`AMCInfo`) is the state of
:func:`~amc_jax.amc` and :func:`~amc_jax.metropolis`;
:func:`monte_carlo_state` finds it inside any wrapped optimizer state, and
:func:`replace_monte_carlo_states` rewrites it there. The bottom layer of
the library: it imports no other amc_jax module.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

PyTree = Any


class AMCInfo(NamedTuple):
  """What happened on the last step.

  Attributes:
    accepted: bool, whether the proposal was accepted.
    proposed_loss: U(x') of the proposal (``inf`` before the first step).
    acceptance_probability: ``min(1, exp(-(U(x') - U(x)) / T))``; 1 for a
      downhill move, 0 for a rejected uphill move at T = 0 or a non-finite U(x').
    reset: bool, whether this step hit ``n_reset`` consecutive rejections, so
      that sigma shrank and mu was zeroed.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.amc(sigma0=0.1, seed=0)
    >>> params = jnp.zeros(3)                  # the minimum of sum(x**2): every move is uphill
    >>> _, state = tx.update(None, tx.init(params), params, value_fn=lambda x: jnp.sum(x**2))
    >>> bool(state.info.accepted), float(state.info.acceptance_probability)
    (False, 0.0)
  """

  accepted: jax.Array
  proposed_loss: jax.Array
  acceptance_probability: jax.Array
  reset: jax.Array


class AMCState(NamedTuple):
  r"""State of :func:`amc` and :func:`metropolis`.

  Attributes:
    key: typed PRNG key, split on every step.
    mu: the trial move's state (:class:`amc_jax.proposals.Proposal` ``init``):
      for the default Gaussian move with ``epsilon != 0`` the centres
      :math:`\mu` of Eq. (9), a pytree like the params; ``()`` with
      ``epsilon = 0`` (and in :func:`metropolis`), where the centres are
      identically zero and nothing is kept; for :func:`~amc_jax.proposals.sparse` and
      :func:`~amc_jax.proposals.layerwise` their base move's state; a dict
      ``{label: state}`` for :func:`~amc_jax.proposals.partition`; ``()``
      for moves without state (``orthogonal``, ``discrete``). Also readable
      as ``proposal_state``.
    sigma: current step size, a scalar (starts at ``sigma0``).
    n_reject: number of consecutive rejections (``n_cr`` in the paper).
    loss: loss of the current params (``inf`` until the first step). In batch
      mode it is the cached U(x) that the next step compares against.
    count: number of steps taken.
    n_accept: number of accepted moves.
    info: an :class:`AMCInfo` for the last step.
    scales: with ``signal_norm=True``, the signal-norm multipliers
      lambda_i (Eq. 18) of the current params, a pytree like them
      (ones until the first step), cached with ``loss``; ``None`` otherwise.
    sequential: with a :class:`~amc_jax.SequentialTest`, its
      :class:`~amc_jax.SequentialState` (the cached per-example losses of the
      current params and what the last decision read); ``None`` otherwise.
      ``loss`` is then the mean of the cached losses over the chunks known.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.amc(sigma0=0.1, seed=0)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> float(state.loss), int(state.count)    # the loss is not known before the first step
    (inf, 0)
    >>> _, state = tx.update(None, state, params, value_fn=lambda x: jnp.sum((x - 1.0) ** 2))
    >>> int(state.count), round(float(state.sigma), 6), state.mu    # epsilon = 0 keeps no mu
    (1, 0.1, ())
  """

  key: jax.Array
  mu: PyTree
  sigma: jax.Array
  n_reject: jax.Array
  loss: jax.Array
  count: jax.Array
  n_accept: jax.Array
  info: AMCInfo
  scales: Optional[PyTree] = None
  sequential: Optional[Any] = None  # a sequential.SequentialState

  @property
  def proposal_state(self) -> PyTree:
    """The state of the trial move (``mu`` for the Gaussian move), an alias of ``mu``."""
    return self.mu


def _is_amc_state(x: Any) -> bool:
  return isinstance(x, AMCState)


def monte_carlo_states(opt_state: PyTree) -> list[AMCState]:
  """Every :class:`AMCState` inside an optimizer state, in pytree order."""
  leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=_is_amc_state)
  return [x for x in leaves if _is_amc_state(x)]


def monte_carlo_state(opt_state: PyTree) -> AMCState:
  """The Monte Carlo state inside an optimizer state: the one accessor.

  Finds the :class:`AMCState` of :func:`amc` or :func:`metropolis` however
  the transformation was wrapped (``optax.chain``, ``optax.inject_hyperparams``,
  ``optax.MultiSteps``, a flax ``TrainState``'s ``opt_state``), so that loops
  and tools read ``loss``, ``sigma``, ``info`` and the counters in one way.
  Under ``vmap`` (an ensemble) its fields carry the chain axis.

  Args:
    opt_state: the state of a transformation that contains one amc_jax
      Monte Carlo transformation.

  Returns:
    Its :class:`AMCState` (the first one, if the state holds several).

  Raises:
    ValueError: if ``opt_state`` holds no :class:`AMCState`.

  Examples:
    >>> import jax.numpy as jnp, optax, amc_jax
    >>> tx = optax.chain(amc_jax.amc(0.1), optax.scale(1.0))
    >>> state = tx.init(jnp.zeros(3))
    >>> int(amc_jax.monte_carlo_state(state).count)
    0
  """
  found = monte_carlo_states(opt_state)
  if not found:
    raise ValueError(
        "the optimizer state holds no AMCState: it is not the state of an"
        " amc_jax Monte Carlo transformation (amc, metropolis)."
    )
  return found[0]


def replace_monte_carlo_states(
    fn: Callable[..., AMCState], opt_state: PyTree, *others: PyTree
) -> PyTree:
  """``opt_state`` with every :class:`AMCState` ``s`` replaced by ``fn(s, *o)``,
  ``o`` the states at the same place in ``others`` (trees of the same
  structure); every other leaf is kept."""
  def visit(node, *rest):
    return fn(node, *rest) if _is_amc_state(node) else node

  return jax.tree_util.tree_map(visit, opt_state, *others, is_leaf=_is_amc_state)
