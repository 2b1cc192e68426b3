"""aMC and Metropolis Monte Carlo as optax transformations.

The step of Section III of Whitelam et al. (2022) is :func:`step`, a few
named parts: :func:`current_loss` (step 1), :func:`propose_and_evaluate`
(step 2, with a pluggable :class:`~amc_jax.proposals.Proposal`), the
Metropolis test (:mod:`acceptance`), :func:`adapt` (steps 3-4) and
:func:`next_state`. :func:`amc` and :func:`metropolis` are thin
configurations of it. This module knows nothing of flax, data or loops.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from amc_jax._src import acceptance
from amc_jax._src import base
from amc_jax._src import loss as loss_lib
from amc_jax._src import proposals
from amc_jax._src import sequential as sequential_lib
from amc_jax._src import trees
from amc_jax._src.state import AMCInfo
from amc_jax._src.state import AMCState

PyTree = Any

# Metropolis never shrinks its step size, so its reject counter never needs to
# wrap: the largest int32 keeps `n_reject` a true count of consecutive rejections.
_NEVER_RESET = 2**31 - 1


# ---------------------------------------------------------------------------
# The step of Section III, one named function per part.


def evaluate(
    value_fn: Callable[[PyTree], Any], params: PyTree, signal_norm: bool, what: str
) -> tuple[jax.Array, Optional[PyTree]]:
  """``value_fn(params)`` as (loss, scales); scales is None without signal norm."""
  if signal_norm:
    return loss_lib.evaluate_with_scales(value_fn, params, what)
  return loss_lib.evaluate(value_fn, params, what), None


def current_loss(
    state: AMCState,
    params: PyTree,
    value_fn: Callable[[PyTree], Any],
    value: Optional[Any],
    minibatch: bool,
    signal_norm: bool,
) -> tuple[jax.Array, Optional[PyTree]]:
  """Step 1 of Section III: the loss U(x) of the current params on this data.

  The cache policy: ``value=`` if given; a fresh evaluation in minibatch mode;
  else (batch mode) the loss cached in the state by the previous step, which
  is evaluated once, on the first step.

  With signal norm also the lambdas of Eq. (18) of the current params, "the
  required quantities having been calculated in the course of calculating
  U(x)": returned by the same call of ``value_fn``, or cached in the state
  with the loss in batch mode.
  """
  if value is not None:
    if signal_norm:
      loss, scales = loss_lib.as_loss_and_scales(value, params, "value=")
    else:
      loss, scales = loss_lib.as_loss(value, "value"), None
    return loss_lib.check_current_loss(loss, state.count), scales
  if minibatch:
    loss, scales = evaluate(value_fn, params, signal_norm, "value_fn(params)")
    return loss_lib.check_current_loss(loss, state.count), scales

  # Batch mode: U(x) is known from the previous step, except on the first.
  if base.is_concrete(state.count):  # eager call: plain Python control flow
    if int(state.count) == 0:
      loss, scales = evaluate(value_fn, params, signal_norm, "value_fn(params)")
      return loss_lib.check_current_loss(loss, state.count), scales
    return state.loss, state.scales
  return _first_evaluation(value_fn, params, state, signal_norm)


def _first_evaluation(value_fn, params, state, signal_norm):
  """Batch mode's U(x) on the first step (``state.count == 0``) of a traced
  step, else the cached loss and scales.

  One chain: a ``lax.cond``. Vmapped chains (a ``jax.custom_batching.
  custom_vmap`` rule, which also applies when the vmap is outside a scan or
  a jit of the step): :func:`_first_evaluation_loop`, since a cond with a
  batched predicate would evaluate the loss on every step. The loss is
  closure-converted first (``jax.make_jaxpr``): whatever ``value_fn``
  closes over (data, labels) becomes an argument of the custom_vmap
  function, so that chains may close over data of their own. Later steps
  need no NaN guard: the cached loss is that of an accepted, hence finite,
  proposal.
  """
  closed, out_shape = jax.make_jaxpr(
      lambda p: evaluate(value_fn, p, signal_norm, "value_fn(params)"), return_shape=True
  )(params)
  out_tree = jax.tree_util.tree_structure(out_shape)

  def converted(p, consts):
    flat = jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(closed.jaxpr, consts))(
        *jax.tree_util.tree_leaves(p))
    return jax.tree_util.tree_unflatten(out_tree, flat)

  def first(params, count, loss, scales, consts):
    def evaluation():
      new_loss, new_scales = converted(params, consts)
      return loss_lib.checked_in_place(new_loss, count), new_scales

    # jax.lax, not this module's lax: benchmarks/speed/step.py swaps the
    # latter to time the accept/reject cond against a select.
    return jax.lax.cond(count == 0, evaluation, lambda: (loss, scales))

  first = jax.custom_batching.custom_vmap(first)

  @first.def_vmap
  def _chains(axis_size, in_batched, *args):  # pylint: disable=unused-variable
    in_axes = jax.tree_util.tree_map(lambda b: 0 if b else None, tuple(in_batched))
    out = _first_of_chains(axis_size, in_axes, converted, *args)
    return out, jax.tree_util.tree_map(lambda _: True, out)

  return first(params, state.count, state.loss, state.scales, list(closed.consts))


def _first_of_chains(axis_size, in_axes, converted, params, count, loss, scales, consts):
  """:func:`_first_evaluation` for chains along axis 0 (``in_axes`` says which
  arguments have it): one ``lax.cond`` on whether any chain is on its first
  step, which evaluates every chain (vmapped) and keeps the new loss where
  ``count == 0``. The predicate is one value for all chains, so the cond
  stays a cond. Under a second vmap (chains of chains) that predicate would
  be batched again; a custom_vmap rule then evaluates each chain in
  :func:`_first_evaluation_loop` instead.
  """
  @jax.custom_batching.custom_vmap
  def chains(params, count, loss, scales, consts):
    one = lambda x, axis: x if axis is not None else jnp.broadcast_to(x, (axis_size,) + x.shape)
    count_b, loss_b = one(count, in_axes[1]), one(loss, in_axes[2])
    scales_b = jax.tree_util.tree_map(one, scales, in_axes[3]) if in_axes[3] is not None \
        else jax.tree_util.tree_map(lambda x: one(x, None), scales)
    needs = count_b == 0

    def evaluation():
      new_loss, new_scales = jax.vmap(converted, in_axes=(in_axes[0], in_axes[4]),
                                      axis_size=axis_size)(params, consts)
      new_loss = jax.vmap(loss_lib.checked_in_place)(new_loss, count_b)
      keep = lambda new, old: jnp.where(
          jnp.reshape(needs, needs.shape + (1,) * (jnp.ndim(old) - 1)), new, old)
      return keep(new_loss, loss_b), jax.tree_util.tree_map(keep, new_scales, scales_b)

    return jax.lax.cond(jnp.any(needs), evaluation, lambda: (loss_b, scales_b))

  @chains.def_vmap
  def _nested(outer_size, outer_batched, *args):  # pylint: disable=unused-variable
    del outer_size
    outer_axes = jax.tree_util.tree_map(lambda b: 0 if b else None, tuple(outer_batched))
    loop = jax.vmap(functools.partial(_first_evaluation_loop, converted), in_axes=in_axes,
                    axis_size=axis_size)
    out = jax.vmap(loop, in_axes=outer_axes)(*args)
    return out, jax.tree_util.tree_map(lambda _: True, out)

  return chains(params, count, loss, scales, consts)


def _first_evaluation_loop(converted, params, count, loss, scales, consts):
  """Batch mode's first evaluation of U(x) for chains of chains (nested
  vmaps): ``converted(params, consts)`` in a while loop of trip count 0 or 1.

  A cond with a batched predicate would evaluate both branches, the loss on
  every step, so nested chains use the loop instead.

  The evaluation reads params through a select on the loop's own counter.
  Without that dependence on the carry, XLA treats the loss as loop invariant
  and hoists it out of the loop, where it runs on every step (it did so under
  vmap, making an ensemble step 5x slower than one chain). The select, in the
  loop's body, holds a params-sized buffer of its own, which the cond of one
  chain does not.
  """
  def body(carry):
    _, _, _, trips = carry
    inside = jax.tree_util.tree_map(
        lambda x: jnp.where(trips < 0, jnp.zeros_like(x), x), params
    )
    new_loss, new_scales = converted(inside, consts)
    return (jnp.zeros_like(carry[0]), loss_lib.checked_in_place(new_loss, count), new_scales,
            trips + 1)

  _, loss, scales, _ = lax.while_loop(
      lambda carry: carry[0], body, (count == 0, loss, scales, jnp.zeros_like(count))
  )
  return loss, scales


class Trial(NamedTuple):
  """A proposed move and what it costs: the output of :func:`propose_and_evaluate`."""

  move: Optional[PyTree]  # the additive move, a pytree like params; None if redrawn
  log_ratio: Any  # log q(x | x') - log q(x' | x); 0 for a symmetric move
  loss: jax.Array  # U(x + move); NaN if the move itself is not finite
  scales: Optional[PyTree]  # signal-norm lambdas at x + move, or None
  # With move=None: draws the move again from its key (the same bits), only
  # if the step accepts it, so that no move is kept while the loss is evaluated.
  redraw: Optional[Callable[[], PyTree]] = None


def _finite(move: PyTree) -> jax.Array:
  """Whether a move is finite, from one sum per leaf.

  A non-finite entry makes the sum NaN or inf (so does a finite move beyond
  float range, which is then rejected too, harmlessly). An elementwise test,
  fused into the loss, was recomputed for every data point.
  """
  leaves = jax.tree_util.tree_leaves(move)
  acc = base.accumulator_dtype(leaves)
  return jnp.isfinite(sum(jnp.sum(e.astype(acc)) for e in leaves))


def _trial_point(params: PyTree, move: PyTree, finite: jax.Array) -> PyTree:
  """``params + select(finite, move, 0)``, rounded like ``optax.apply_updates``.

  Not a bare x + move: the caller applies x + (move or 0) to a finished move,
  and the trial point must round exactly like it. A bare x + (mu + sigma * z)
  lets XLA:CPU contract the multiply and the add into one fused multiply-add
  (one rounding instead of two), so params + updates would miss the evaluated
  point by an ulp; the select blocks the contraction.
  """
  return jax.tree_util.tree_map(
      lambda x, e: x + jnp.where(finite, e, jnp.zeros_like(e)), params, move
  )


def propose(
    key: jax.Array,
    proposal: proposals.Proposal,
    state: AMCState,
    params: PyTree,
    scales: Optional[PyTree],
) -> tuple[PyTree, Any, jax.Array, PyTree]:
  """Step 2 of Section III, the draw: a move (Eq. 9 for the Gaussian move)
  and the trial point. Returns ``(move, log_ratio, finite, trial_params)``.

  The trial point is rounded exactly as ``optax.apply_updates(params, move)``
  will round it, so the cached loss of an accepted move is exact.
  """
  move, log_ratio = proposal.propose(key, state.mu, params, state.sigma, scales)
  proposals.check_move(move, params)
  # The move in buffers of its own: XLA otherwise keeps the normals'
  # intermediates (two params-sized arrays) alive for each of the move's
  # consumers instead (measured: fwd + 5.45 P -> fwd + 2.8 P for a step).
  move = base.materialised(move, jnp.isnan(state.sigma))
  # A non-finite move (from non-finite scales) is never accepted.
  finite = _finite(move)
  return move, log_ratio, finite, base.materialised(_trial_point(params, move, finite), ~finite)


def propose_point(
    key: jax.Array,
    proposal: proposals.Proposal,
    state: AMCState,
    params: PyTree,
    scales: Optional[PyTree],
) -> tuple[Any, jax.Array, PyTree]:
  """:func:`propose` keeping only the trial point: ``(log_ratio, finite,
  trial_params)``.

  The draw is fused into the trial point, so that no move is held beside
  the params and the trial point; the move is drawn again from the same key
  when it is needed (:func:`one_try_redrawn`). A non-finite move entry makes
  its trial entry NaN (the select also keeps XLA from contracting the add
  into the draw's multiply, as in :func:`_trial_point`), and a trial point
  that is not finite is never accepted.
  """
  move, log_ratio = proposal.propose(key, state.mu, params, state.sigma, scales)
  proposals.check_move(move, params)
  trial_params = jax.tree_util.tree_map(
      lambda x, e: x + jnp.where(jnp.isfinite(e), e, jnp.nan), params, move
  )
  trial_params = base.materialised(trial_params, jnp.isnan(state.sigma))
  return log_ratio, _finite(trial_params), trial_params


def propose_and_evaluate(
    key: jax.Array,
    proposal: proposals.Proposal,
    state: AMCState,
    params: PyTree,
    scales: Optional[PyTree],
    value_fn: Callable[[PyTree], Any],
    signal_norm: bool,
    keep_move: bool = True,
) -> Trial:
  """Step 2 of Section III: draw a move (:func:`propose`) and evaluate the
  loss at ``params + move``. With ``keep_move=False`` the trial's move is
  None (:func:`propose_point`)."""
  if keep_move:
    move, log_ratio, finite, trial_params = propose(key, proposal, state, params, scales)
  else:
    move = None
    log_ratio, finite, trial_params = propose_point(key, proposal, state, params, scales)
  loss, trial_scales = evaluate(value_fn, trial_params, signal_norm, "value_fn(proposal)")
  return Trial(move, log_ratio, jnp.where(finite, loss, jnp.nan), trial_scales)


def one_try(
    proposal_key: jax.Array,
    accept_key: jax.Array,
    proposal: proposals.Proposal,
    state: AMCState,
    params: PyTree,
    scales: Optional[PyTree],
    value_fn: Callable[[PyTree], Any],
    signal_norm: bool,
    current: jax.Array,
    temperature: jax.Array,
    cold: bool,
    keep_move: bool = True,
) -> tuple[Trial, acceptance.Decision]:
  """One trial move and the Metropolis(-Hastings) test: Section III's step 2.

  ``keep_move=False``: the trial's move is None (:func:`one_try_redrawn`)."""
  trial = propose_and_evaluate(
      proposal_key, proposal, state, params, scales, value_fn, signal_norm, keep_move
  )
  decision = acceptance.metropolis_decision(
      accept_key, current, trial.loss, temperature, trial.log_ratio, cold=cold
  )
  return trial, decision


def one_try_redrawn(
    proposal_key: jax.Array,
    accept_key: jax.Array,
    proposal: proposals.Proposal,
    state: AMCState,
    params: PyTree,
    scales: Optional[PyTree],
    *rest: Any,
) -> tuple[Trial, acceptance.Decision]:
  """:func:`one_try` that keeps no move (``proposal_batch_size=1`` with one
  trial); ``rest`` is :func:`one_try`'s ``value_fn, signal_norm, current,
  temperature, cold``.

  The move is dropped once the trial point is built, and drawn again from the
  same key, the same bits, only if the step accepts it: while the loss is
  evaluated the step holds the params and the trial point, the paper's "two
  versions of the model", and no move. The price is a second draw on each
  accepted step.
  """
  trial, decision = one_try(proposal_key, accept_key, proposal, state, params, scales, *rest,
                            keep_move=False)

  def redraw():
    return propose(proposal_key, proposal, state, params, scales)[0]

  return trial._replace(redraw=redraw), decision


def _evaluate_trials(trial_at: Callable, keys: jax.Array, at: PyTree,
                     batch_size: Optional[int]) -> Trial:
  """The trials ``trial_at(key, at)`` for every key: in one vmapped call
  (``batch_size=None``; every trial's move is kept), or ``batch_size`` at a
  time with ``jax.lax.map`` (the moves are dropped: only the losses, Hastings
  ratios and scales come back, and the chosen move is drawn again from its
  key, bit for bit)."""
  if batch_size is None:
    return jax.vmap(trial_at, in_axes=(0, None))(keys, at)

  def loss_only(key):
    trial = trial_at(key, at, keep_move=False)
    return trial._replace(log_ratio=jnp.asarray(trial.log_ratio))

  return jax.lax.map(loss_only, keys, batch_size=min(int(batch_size), keys.shape[0]))


def _chosen_move(trials: Trial, keys: jax.Array, chosen: jax.Array, proposal, state, at, scales):
  """The chosen trial's move: kept (vmapped trials) or drawn again from its key."""
  if trials.move is not None:
    return trees.take(trials.move, chosen)
  move, _, _, _ = propose(keys[chosen], proposal, state, at, scales)
  return move


def multiple_try(
    num_proposals: int, batch_size: Optional[int] = None
) -> Callable[..., tuple[Trial, acceptance.Decision]]:
  r"""K trial moves per step, evaluated in one vmapped call (``num_proposals=K``).

  The K moves are drawn with the transformation's proposal from K keys
  (``jax.random.split(proposal_key, K)``) and evaluated with
  ``jax.vmap(value_fn)``. With ``batch_size=b`` (``proposal_batch_size``)
  they are evaluated b at a time (``jax.lax.map``), so that the step holds b
  trial points instead of K; the chosen move is then drawn a second time from
  its key (the same bits), so the trials, the decisions and the updates are
  those of ``batch_size=None`` wherever XLA evaluates the loss alike in a
  batch of b and of K (it does on the losses of the tests; a matmul's
  blocking may round differently in rare shapes).

  * ``T = 0``: the trial of lowest loss is accepted iff its loss does not
    exceed U(x). K evaluations.
  * ``T > 0``: multiple-try Metropolis (:func:`acceptance.multiple_try_select`
    and :func:`acceptance.multiple_try_decision`): a trial is chosen with
    probability proportional to its Boltzmann weight, K - 1 reference points
    are drawn around it with the same proposal, and it is accepted with
    :math:`\min(1, \sum_k w(y_k, x) / \sum_k w(x^*_k, y))`. 2K - 1
    evaluations, exact for any proposal with a correct ``log_ratio``. "Best of
    K, then a Metropolis test against x" would not be exact, and is not what
    this does. A temperature that is a schedule or a ``temperature=`` argument
    is only known when the step runs, so such steps draw the references
    whatever its value; a constant T = 0 skips them.

  aMC's rules see one step: the proposal's state (mu, Eq. 10) follows the
  chosen move on acceptance, and a rejection counts once towards
  ``n_reset``. The references are drawn with the proposal state and signal-
  norm scales of x (so with signal norm or aMC's mu the move is not exactly
  symmetric, as for one trial).
  """
  k = int(num_proposals)
  if batch_size is not None:
    batch_size = _proposal_batch_size(batch_size)

  def try_moves(
      proposal_key, accept_key, proposal, state, params, scales, value_fn, signal_norm,
      current, temperature, cold,
  ):
    def trial_at(key, at, keep_move=True):
      return propose_and_evaluate(
          key, proposal, state, at, scales, value_fn, signal_norm, keep_move
      )

    keys = jax.random.split(proposal_key, k)
    trials = _evaluate_trials(trial_at, keys, params, batch_size)
    dtype = current.dtype
    log_ratios = jnp.broadcast_to(jnp.asarray(trials.log_ratio).astype(dtype), (k,))
    trials = trials._replace(log_ratio=log_ratios)
    u_key, select_key, reference_key = jax.random.split(accept_key, 3)

    def take_chosen(chosen):
      move = _chosen_move(trials, keys, chosen, proposal, state, params, scales)
      return trees.take(trials._replace(move=None), chosen)._replace(move=move)

    if cold:
      chosen = acceptance.best_index(trials.loss)
      if trials.move is None:  # drawn again only if accepted
        trial = trees.take(trials, chosen)._replace(redraw=lambda: _chosen_move(
            trials, keys, chosen, proposal, state, params, scales))
      else:
        trial = take_chosen(chosen)
      decision = acceptance.metropolis_decision(u_key, current, trial.loss, temperature, cold=True)
      return trial._replace(log_ratio=0.0), decision
    chosen = acceptance.multiple_try_select(select_key, current, trials.loss, log_ratios, temperature)
    trial = take_chosen(chosen)
    y = _trial_point(params, trial.move, _finite(trial.move))
    references = _evaluate_trials(trial_at, jax.random.split(reference_key, k - 1), y, batch_size)
    reference_log_ratios = jnp.broadcast_to(
        jnp.asarray(references.log_ratio).astype(dtype), (k - 1,)
    )
    decision = acceptance.multiple_try_decision(
        u_key, current, trials.loss, log_ratios, chosen, references.loss,
        reference_log_ratios, temperature,
    )
    return trial, decision

  return try_moves


def adapt(
    state: AMCState, accepted: jax.Array, n_reset: base.Scalar, sigma_decay: base.Scalar
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Steps 3-4 of Section III for sigma and the reject counter.

  Accept: :math:`n_{cr} \to 0`. Reject: :math:`n_{cr} \to n_{cr} + 1`, and at
  :math:`n_{cr} = n_s` a reset: :math:`n_{cr} \to 0`, :math:`\sigma \to 0.95
  \sigma` (``sigma_decay``). Returns ``(sigma, n_reject, reset)`` after a
  rejection and whether the step resets (the proposal's own state, aMC's
  :math:`\mu`, is adapted by ``proposal.update``).
  """
  rejections = state.n_reject + 1
  would_reset = rejections >= jnp.asarray(n_reset).astype(jnp.int32)
  n_reject = jnp.where(would_reset, jnp.zeros_like(rejections), rejections)
  sigma = jnp.where(
      would_reset,
      state.sigma * jnp.asarray(sigma_decay).astype(state.sigma.dtype),
      state.sigma,
  )
  return sigma, n_reject, (~accepted) & would_reset


def next_state(
    state: AMCState,
    proposal: proposals.Proposal,
    trial: Trial,
    current: jax.Array,
    current_scales: Optional[PyTree],
    decision: acceptance.Decision,
    rejected: tuple[jax.Array, jax.Array, jax.Array],
    key: jax.Array,
) -> tuple[PyTree, AMCState]:
  """Assembles the updates and the state after the step: x -> x' or x -> x.

  The accepted and the rejected outcome are the two branches of a
  ``jax.lax.cond`` (under ``vmap`` JAX turns it into a select).
  ``benchmarks/speed/step.py`` times it against a select of both outcomes
  (2 CPU cores, interleaved medians, cond / select): one chain 0.94 (sine
  net) and 1.08 (MLP on 60k images); 10 and 100 vmapped chains 0.98-1.26,
  where both are selects and the spread is noise. The cond is not
  measurably slower.
  """
  accepted = decision.accepted
  sigma_rejected, n_reject_rejected, reset = rejected
  if trial.move is None:  # drawn again inside the accept branch
    accepted_move, like = trial.redraw, jax.eval_shape(trial.redraw)
  else:
    accepted_move, like = (lambda: trial.move), trial.move

  def on_accept(_):
    return (
        accepted_move(),
        state.sigma,
        jnp.zeros_like(state.n_reject),
        trial.loss,
    )

  def on_reject(_):
    return (
        jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, m.dtype), like),
        sigma_rejected,
        n_reject_rejected,
        current,
    )

  outcome = lax.cond(accepted, on_accept, on_reject, None)
  updates, sigma, n_reject, loss = outcome
  # The signal-norm lambdas too: a select written into the donated state.
  scales = None if trial.scales is None else jax.tree_util.tree_map(
      lambda t, c: jnp.where(accepted, t, c), trial.scales, current_scales)
  # The move's state (mu, Eq. 10) outside the cond: one elementwise select
  # that XLA writes into the donated state's buffer, where a cond output
  # held a params-sized copy of its own.
  # A redrawn move is known only as the updates, which equal it where accepted.
  move = updates if trial.move is None else trial.move
  mu = proposal.update(state.mu, move, accepted, reset & ~accepted)
  return updates, AMCState(
      key=key,
      mu=mu,
      sigma=sigma,
      n_reject=n_reject,
      loss=loss,
      count=optax.safe_increment(state.count),
      n_accept=state.n_accept + accepted.astype(state.n_accept.dtype),
      info=AMCInfo(
          accepted=accepted,
          proposed_loss=trial.loss,
          acceptance_probability=decision.acceptance_probability,
          reset=reset,
      ),
      scales=scales,
  )


def step(
    state: AMCState,
    params: PyTree,
    *,
    proposal: proposals.Proposal,
    value_fn: Callable[[PyTree], Any],
    value: Optional[Any],
    scales: Optional[PyTree],
    n_reset: base.Scalar,
    sigma_decay: base.Scalar,
    temperature: jax.Array,
    minibatch: bool,
    signal_norm: bool,
    try_move: Callable[..., tuple[Trial, acceptance.Decision]] = one_try,
    cold: bool = False,
) -> tuple[PyTree, AMCState]:
  """One step of Section III: propose, evaluate, accept/reject, adapt.

  Returns ``(updates, new state)``; the updates are the accepted move or
  zeros. Random numbers: ``state.key`` splits into ``(next key, proposal key,
  acceptance key)``. ``try_move`` is :func:`one_try` or a
  :func:`multiple_try`; ``cold`` says that T is the constant 0.
  """
  if scales is not None:
    loss_lib.check_scales(scales, params)
  key, proposal_key, accept_key = jax.random.split(state.key, 3)

  # 1. The current loss U(x) (and, with signal norm, the lambdas of Eq. 18).
  current, lambdas = current_loss(state, params, value_fn, value, minibatch, signal_norm)
  if lambdas is not None:
    # User scales=, if any, multiply the signal-norm lambdas.
    scales = lambdas if scales is None else jax.tree_util.tree_map(jnp.multiply, lambdas, scales)
  # 2. A trial move x' = x + eps and its loss U(x'), accepted with
  # probability min(1, exp(-dU/T)) (T = 0: iff U(x') <= U(x)); or K of them
  # (multiple_try).
  trial, decision = try_move(
      proposal_key, accept_key, proposal, state, params, scales, value_fn, signal_norm,
      current, temperature, cold,
  )
  # 3-4. Adapt sigma, the reject counter and the move's state (mu, Eq. 10).
  rejected = adapt(state, decision.accepted, n_reset, sigma_decay)
  return next_state(
      state, proposal, trial, current, lambdas, decision, rejected, key
  )


def sequential_step(
    state: AMCState,
    params: PyTree,
    *,
    proposal: proposals.Proposal,
    chunk_fn: Callable[[PyTree, jax.Array], jax.Array],
    scales: Optional[PyTree],
    n_reset: base.Scalar,
    sigma_decay: base.Scalar,
    temperature: jax.Array,
    cold: bool = False,
) -> tuple[PyTree, AMCState]:
  """One step of Section III decided by the sequential test (:class:`~amc_jax.SequentialTest`).

  The same parts as :func:`step`, with the acceptance test reading the data
  chunk by chunk (:func:`amc_jax._src.sequential.decide`) instead of
  comparing two losses: propose, decide, adapt. U(x) needs no separate
  evaluation: the test reads (or recalls) the current params' per-example
  losses with those of the trial. Random numbers: ``state.key`` splits into
  ``(next key, proposal key, acceptance key)`` as in :func:`step`; the
  uniform is drawn from the acceptance key as there, and the chunk order from
  ``fold_in(acceptance key, 1)``.
  """
  if scales is not None:
    loss_lib.check_scales(scales, params)
  key, proposal_key, accept_key = jax.random.split(state.key, 3)
  # 2. A trial move x' = x + eps, decided on as much data as it takes.
  move, log_ratio, finite, trial_params = propose(proposal_key, proposal, state, params, scales)
  outcome = sequential_lib.decide(
      accept_key, state.sequential, chunk_fn, params, trial_params, temperature, log_ratio,
      finite, cold=cold,
  )
  trial = Trial(move, log_ratio, outcome.trial_loss, None)
  # 3-4. Adapt sigma, the reject counter and the move's state (mu, Eq. 10).
  rejected = adapt(state, outcome.decision.accepted, n_reset, sigma_decay)
  updates, new = next_state(
      state, proposal, trial, outcome.current_loss, None, outcome.decision, rejected, key
  )
  return updates, new._replace(
      loss=sequential_lib.cached_loss(outcome.state), sequential=outcome.state
  )


def init_state(
    params: PyTree,
    *,
    proposal: proposals.Proposal,
    sigma0: base.Scalar,
    signal_norm: bool,
    seed: base.PRNGKeyLike,
    sequential: Optional[sequential_lib.SequentialTest] = None,
) -> AMCState:
  """The :class:`AMCState` before the first step (``tx.init``)."""
  proposals.check_params(params)
  dtype = base.loss_dtype()
  return AMCState(
      key=base.as_key(seed),
      mu=proposal.init(params),
      sigma=jnp.asarray(sigma0).astype(dtype),
      n_reject=jnp.zeros([], jnp.int32),
      loss=jnp.full([], jnp.inf, dtype),
      count=jnp.zeros([], jnp.int32),
      n_accept=jnp.zeros([], jnp.int32),
      info=AMCInfo(
          accepted=jnp.zeros([], bool),
          proposed_loss=jnp.full([], jnp.inf, dtype),
          acceptance_probability=jnp.zeros([], dtype),
          reset=jnp.zeros([], bool),
      ),
      scales=jax.tree_util.tree_map(jnp.ones_like, params) if signal_norm else None,
      sequential=None if sequential is None else sequential_lib.init(sequential),
  )


def _temperature_of_step(schedule, temperature, count):
  """(T of this step, whether it is the constant 0): the transformation's
  ``schedule`` at ``count``, or the ``temperature=`` argument of the step."""
  if temperature is None:
    return acceptance.temperature_at(schedule, count), base.is_static_zero(schedule)
  return acceptance.temperature_override(temperature), False


def _check_value_fn(value_fn: Any, chunk_fn: Any) -> None:
  if chunk_fn is not None:
    raise ValueError(
        "chunk_fn= is the per-example loss of a sequential test, but this"
        " state has none: build the transformation with"
        " sequential=amc_jax.SequentialTest(...), or pass value_fn=."
    )
  if value_fn is None:
    raise TypeError(
        "amc_jax transformations need the loss: pass value_fn=, a function"
        " params -> scalar loss, as a keyword argument of tx.update."
    )
  if not callable(value_fn):
    raise TypeError(f"value_fn must be callable, got {type(value_fn).__name__}.")


def _check_sequential_args(chunk_fn: Any, value: Any, signal_norm: bool,
                           num_proposals: int) -> None:
  if chunk_fn is None:
    raise TypeError(
        "this state runs a sequential test: pass chunk_fn=, a function"
        " (params, c) -> the per-example losses of data chunk c, as a keyword"
        " argument of tx.update."
    )
  if not callable(chunk_fn):
    raise TypeError(f"chunk_fn must be callable, got {type(chunk_fn).__name__}.")
  if value is not None:
    raise ValueError(
        "value= has no meaning with a sequential test: the test reads the"
        " current params' per-example losses itself."
    )
  if signal_norm or num_proposals != 1:
    raise ValueError(
        "the sequential test works with one proposal and without signal norm;"
        f" this transformation has signal_norm={signal_norm},"
        f" num_proposals={num_proposals} (with fit, pass sequential=False for"
        " plain minibatches)."
    )


def _transformation(
    *,
    proposal: proposals.Proposal,
    sigma0: base.Scalar,
    n_reset: base.Scalar,
    sigma_decay: base.Scalar,
    temperature: base.ScalarOrSchedule,
    minibatch: bool,
    signal_norm: bool,
    seed: base.PRNGKeyLike,
    num_proposals: int = 1,
    proposal_batch_size: Optional[int] = None,
    try_move: Optional[Callable[..., tuple[Trial, acceptance.Decision]]] = None,
    sequential: Optional[sequential_lib.SequentialTest] = None,
) -> optax.GradientTransformationExtraArgs:
  """The optax transformation around :func:`step`: ``init`` and ``update``.

  ``try_move`` (default: :func:`one_try`, or :func:`multiple_try` for
  ``num_proposals > 1``) proposes and decides; tests pass deliberately wrong
  rules here to show that the statistical tests can tell.
  """
  if try_move is None:
    if num_proposals > 1:
      try_move = multiple_try(num_proposals, proposal_batch_size)
    else:
      try_move = one_try if proposal_batch_size is None else one_try_redrawn
  schedule = temperature

  def init_fn(params: PyTree) -> AMCState:
    return init_state(params, proposal=proposal, sigma0=sigma0, signal_norm=signal_norm,
                      seed=seed, sequential=sequential)

  def update_fn(
      updates: Any,
      state: AMCState,
      params: Optional[PyTree] = None,
      *,
      value_fn: Optional[Callable[[PyTree], Any]] = None,
      value: Optional[Any] = None,
      scales: Optional[PyTree] = None,
      temperature: Optional[base.Scalar] = None,
      chunk_fn: Optional[Callable[[PyTree, jax.Array], Any]] = None,
      **extra_args: Any,
  ) -> tuple[PyTree, AMCState]:
    del updates, extra_args  # Monte Carlo uses no gradients.
    if params is None:
      raise ValueError(
          "amc_jax transformations need the current params: call"
          " tx.update(updates, state, params, value_fn=...)."
      )
    t, cold = _temperature_of_step(schedule, temperature, state.count)
    shared = dict(proposal=proposal, scales=scales, n_reset=n_reset, sigma_decay=sigma_decay,
                  temperature=t, cold=cold)
    if state.sequential is not None:
      _check_sequential_args(chunk_fn, value, signal_norm, num_proposals)
      return sequential_step(state, params, chunk_fn=chunk_fn, **shared)
    _check_value_fn(value_fn, chunk_fn)
    return step(state, params, value_fn=value_fn, value=value, minibatch=minibatch,
                signal_norm=signal_norm, try_move=try_move, **shared)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _num_proposals(num_proposals: Any) -> int:
  """``num_proposals`` as a Python int >= 1 (None means 1)."""
  if num_proposals is None:
    return 1
  if not base.is_concrete(num_proposals):
    raise TypeError(
        "num_proposals must be a static Python int (it sets the number of"
        " trials compiled into the step); with optax.inject_hyperparams pass"
        " static_args=('num_proposals',)."
    )
  if isinstance(num_proposals, (bool, np.bool_)) or not (
      isinstance(num_proposals, (int, np.integer))
      or (hasattr(num_proposals, "dtype") and np.ndim(num_proposals) == 0
          and jnp.issubdtype(num_proposals.dtype, jnp.integer))
  ) or int(num_proposals) < 1:
    raise ValueError(f"num_proposals must be an integer >= 1, got {num_proposals!r}.")
  return int(num_proposals)


def _proposal_batch_size(batch_size: Any) -> Optional[int]:
  """``proposal_batch_size`` as None or a Python int >= 1."""
  if batch_size is None:
    return None
  if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
      or int(batch_size) < 1:
    raise ValueError(
        f"proposal_batch_size must be None or a static int >= 1, got {batch_size!r}."
    )
  return int(batch_size)


def _check_flags(minibatch: Any, signal_norm: Any) -> None:
  if not isinstance(minibatch, bool):
    raise TypeError(f"minibatch must be a bool, got {minibatch!r}.")
  if not isinstance(signal_norm, bool):
    raise TypeError(f"signal_norm must be a bool, got {signal_norm!r}.")


def amc(
    sigma0: base.Scalar,
    epsilon: base.Scalar = 0.0,
    n_reset: int = 100,
    sigma_decay: base.Scalar = 0.95,
    temperature: base.ScalarOrSchedule = 0.0,
    *,
    proposal: Optional[proposals.Proposal] = None,
    num_proposals: Optional[int] = None,
    minibatch: bool = False,
    signal_norm: bool = False,
    seed: base.PRNGKeyLike = 0,
    sequential: Optional[sequential_lib.SequentialTest] = None,
    proposal_batch_size: Optional[int] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adaptive Monte Carlo (aMC), Section III of Whitelam et al. (2022).

  Each step proposes a move of every parameter,

  .. math::
    x_i \to x_i' = x_i + \epsilon_i, \qquad
    \epsilon_i \sim \mathcal{N}(\mu_i, (\lambda_i \sigma)^2) \quad \text{(Eq. 9)},

  evaluates the loss :math:`U(x')`, and accepts the move with the Metropolis
  probability :math:`\min(1, e^{-\Delta U / T})`, which at :math:`T = 0` means
  accept iff :math:`U(x') \le U(x)`. On acceptance the number of consecutive
  rejections :math:`n_{cr}` is set to 0 and the proposal centres follow the
  accepted move,

  .. math::
    \mu_i \to \mu_i + \epsilon\,(\epsilon_i - \mu_i) \quad \text{(Eq. 10)};

  on rejection :math:`n_{cr} \to n_{cr} + 1`, and when it reaches
  ``n_reset`` (:math:`n_s`): :math:`n_{cr} \to 0`,
  :math:`\sigma \to` ``sigma_decay`` :math:`\cdot\,\sigma` and
  :math:`\mu_i \to 0`. A proposal whose loss is NaN or infinite is always
  rejected.

  The returned updates are exactly the accepted move :math:`\epsilon` (so
  ``optax.apply_updates(params, updates)`` is bit-identical to the proposal
  that was evaluated) or zeros. The incoming ``updates`` (gradients, in other
  optimizers) are ignored: pass ``None``.

  **Batch mode** (default): the loss of the current params is cached in the
  state, so every step after the first costs one call of ``value_fn``. Use it
  when ``value_fn`` sees the same data on every step. **Minibatch mode**
  (``minibatch=True``): every step evaluates both :math:`U(x)` and
  :math:`U(x')` on this step's data (two calls). Passing ``value=`` (the
  current params' loss on this step's data, e.g. from a previous forward pass)
  re-bases the comparison on it in either mode, at the cost of one call.

  Random numbers: each step splits ``state.key`` into
  ``(next key, proposal key, acceptance key)``; the standard normals of the
  move are ``jax.random.normal(proposal_key, (N,))`` for the ``N`` parameters
  in ``jax.tree_util.tree_leaves`` order (see
  :func:`amc_jax.standard_normal_like`), and the uniform of the Metropolis test
  is ``jax.random.uniform(acceptance_key, ())``.

  Args:
    sigma0: initial step size :math:`\sigma_0 > 0`.
    epsilon: rate :math:`\epsilon` at which the proposal centres follow
      accepted moves (Eq. 10). 0 switches the adaptation of mu off (and skips
      it in the compiled step). The paper uses values in [-5e-3, 0.1].
    n_reset: number of consecutive rejections :math:`n_s \ge 1` after which
      sigma shrinks and mu is zeroed.
    sigma_decay: factor in (0, 1] applied to sigma at a reset (0.95 in the
      paper; 1 keeps sigma fixed).
    temperature: :math:`T \ge 0`, a float or an optax schedule mapping the step
      count to T. A decreasing schedule is simulated annealing. A schedule
      value <= 0 allows no uphill move.
    proposal: the trial move, an :class:`amc_jax.proposals.Proposal`; ``None``
      is :func:`amc_jax.proposals.gaussian` with this ``epsilon`` (the move
      above). Other moves (``sparse``, ``layerwise``, ``orthogonal``,
      ``discrete``, ``partition``, or your own) keep the rest of the step:
      the acceptance test (with the move's Hastings ratio at T > 0), the reject
      counter and the sigma schedule. Give ``epsilon`` to the Gaussian move
      itself then, not here.
    num_proposals: K >= 1 trial moves per step (``None``: 1), evaluated in
      one vmapped call of ``value_fn`` (see :func:`multiple_try`). A static
      int: with ``optax.inject_hyperparams`` list it in ``static_args``. At T = 0 the best of
      the K is accepted iff its loss does not exceed U(x); at T > 0
      multiple-try Metropolis keeps the Boltzmann distribution exact (2K - 1
      evaluations). ``K = 1`` is the step above, bit for bit. On an
      accelerator K evaluations cost about one; on a CPU, K. The K trial
      points are all held at once (K copies of the params): see
      ``proposal_batch_size``.
    minibatch: evaluate the current params' loss on every step (see above).
      On a real data set prefer the sequential test (next argument): a
      fixed-size minibatch stalls at its noise floor, and with
      ``epsilon > 0`` mu follows moves accepted on noise.
    signal_norm: "signal norm on" (Section III B): the step size of weight
      :math:`x_i` feeding neuron :math:`j` is :math:`\lambda_i\sigma` with

      .. math::
        \lambda_i = \Big(N_\text{data}^{-1} \sum_{\alpha=1}^{N_\text{data}}
        \sum_{i' \to j} S_{\alpha i'}^2\Big)^{-1/2} \quad \text{(Eq. 17)},

      :math:`\lambda_i = 1` for biases (Eq. 18). ``value_fn`` must then return
      the pair ``(loss, scales)``, the lambdas of the params it was called with,
      computed in the same forward pass (:func:`amc_jax.signal_norm_value_fn`
      and :func:`amc_jax.signal_norm_apply` do so for flax models). The lambdas
      of the current params are cached in ``state.scales`` next to the loss,
      so a batch-mode step still costs one call of ``value_fn``; ``value=``
      must then be such a pair too. A ``scales=`` argument multiplies them.
    seed: an int or a ``jax.random.key`` (a legacy ``PRNGKey`` is accepted).
    sequential: a :class:`~amc_jax.SequentialTest` (with ``num_examples``):
      decide each move with just enough data. ``tx.update`` then takes
      ``chunk_fn=`` (``chunk_fn(params, c)``: the per-example losses of data
      chunk ``c``) instead of ``value_fn=``, the state caches the current
      params' per-example losses (``state.sequential``), and a move is
      accepted only when the data say, with the test's confidence, that the
      full-data loss does not rise (T = 0) or passes the Metropolis test
      (T > 0). mu (Eq. 10) then follows only such moves. One proposal, no
      signal norm. :func:`~amc_jax.fit` uses the test by default for
      minibatches (``batch_size=``).
    proposal_batch_size: with ``num_proposals=K``, how many of the K trials
      are evaluated at a time. ``None`` (the default) evaluates all K in one
      vmapped call, the fast choice on an accelerator, holding K trial
      points; an int b evaluates b at a time (``jax.lax.map``), holding b,
      and draws the chosen move again from its key. The same trials and
      decisions as ``None`` (see :func:`multiple_try`); b = 1 bounds the
      step's memory independently of K. With one trial (K = 1), an int
      keeps no move: the step holds the params and the trial point, the
      paper's "two versions of the model", and draws an accepted move a
      second time from its key (:func:`one_try_redrawn`; the same params,
      state and decisions as ``None``, bit for bit). That saves one copy of
      the params (fwd + 1 P plus the largest leaf's normals, instead of fwd
      + 2 P) at the cost of a second draw on accepted steps, which matters
      where the params dominate the step. Under ``vmap`` the accept/reject
      cond is a select, so vmapped chains gain nothing from it.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. Its ``update`` is called as
    ``tx.update(updates, state, params, *, value_fn, value=None, scales=None,
    temperature=None)`` where ``value_fn(params)`` returns the scalar loss
    (it needs no gradient: argmax or integer losses are fine), ``value``
    optionally gives the current params' loss, ``scales`` is an optional
    pytree like params of multipliers :math:`\lambda_i` (Eq. 9; e.g. from
    signal norm), and ``temperature``, if given, is the temperature of this
    step in place of the transformation's (replica exchange sets it per
    replica). Other extra arguments are ignored, so it chains with other
    optax transformations. The state is an :class:`AMCState`; read it through
    :func:`amc_jax.monte_carlo_state` when the transformation is wrapped.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> def loss(params):
    ...   return jnp.sum((params["x"] - 1.0) ** 2)
    >>> tx = amc_jax.amc(sigma0=0.1, epsilon=0.1, n_reset=20, seed=0)
    >>> params = {"x": jnp.zeros(3)}
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(None, state, params, value_fn=loss)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(500):
    ...   params, state = step(params, state)
    >>> bool(state.loss < 0.05), int(state.count)
    (True, 500)

  References:
    Whitelam, Selin, Benlolo, Casert, Tamblyn, `Training neural networks using
    Metropolis Monte Carlo and an adaptive variant
    <https://arxiv.org/abs/2205.07408>`_, 2022.
  """
  base.check_positive("sigma0", sigma0)
  base.check_finite("epsilon", epsilon)
  base.check_count("n_reset", n_reset)
  base.check_unit_interval("sigma_decay", sigma_decay)
  base.check_temperature(temperature)
  _check_flags(minibatch, signal_norm)
  num_proposals = _num_proposals(num_proposals)
  proposal_batch_size = _proposal_batch_size(proposal_batch_size)
  if sequential is not None:
    sequential_lib.check_test(sequential, need_examples=True)
    if signal_norm or num_proposals != 1:
      raise ValueError(
          "sequential works with one proposal and without signal norm; got"
          f" signal_norm={signal_norm}, num_proposals={num_proposals}."
      )
  if base.is_concrete(seed):
    base.as_key(seed)  # validate the type now rather than at init
  if proposal is None:
    proposal = proposals.gaussian(epsilon)
  else:
    proposal = proposals.as_proposal(proposal, "proposal")
    if not base.is_static_zero(epsilon) and base.is_concrete(epsilon):
      raise ValueError(
          f"amc got both epsilon={epsilon!r} and a proposal; epsilon belongs to"
          " the Gaussian move: pass proposal=amc_jax.proposals.gaussian(epsilon)"
          " (or wrap it, e.g. proposals.sparse(f, base=proposals.gaussian(epsilon)))."
      )
  return _transformation(
      proposal=proposal,
      sigma0=sigma0,
      n_reset=n_reset,
      sigma_decay=sigma_decay,
      temperature=temperature,
      minibatch=minibatch,
      signal_norm=signal_norm,
      seed=seed,
      num_proposals=num_proposals,
      proposal_batch_size=proposal_batch_size,
      sequential=sequential,
  )


def metropolis(
    sigma: base.Scalar,
    temperature: base.ScalarOrSchedule = 0.0,
    *,
    proposal: Optional[proposals.Proposal] = None,
    num_proposals: Optional[int] = None,
    minibatch: bool = False,
    signal_norm: bool = False,
    seed: base.PRNGKeyLike = 0,
    sequential: Optional[sequential_lib.SequentialTest] = None,
    proposal_batch_size: Optional[int] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Plain Metropolis Monte Carlo: aMC with :math:`\epsilon = 0` and fixed sigma.

  Each step proposes :math:`x_i \to x_i + \epsilon_i` with
  :math:`\epsilon_i \sim \mathcal{N}(0, (\lambda_i\sigma)^2)` (Eq. 1 of
  Whitelam et al. 2022, Eq. 9 with :math:`\mu = 0`) and accepts it with
  probability :math:`\min(1, e^{-\Delta U/T})`. At :math:`T > 0` the chain
  samples the Boltzmann distribution :math:`\propto e^{-U(x)/T}`; at
  :math:`T = 0` it only moves downhill. Same step, state and arguments as
  :func:`amc`; ``n_reject`` counts consecutive rejections without wrapping.

  Args:
    sigma: step size :math:`\sigma > 0`.
    temperature: :math:`T \ge 0`, a float or an optax schedule.
    proposal: the trial move (:mod:`amc_jax.proposals`); ``None`` is the
      symmetric Gaussian move above. ``sigma`` is passed to it as its size.
    num_proposals: K trial moves per step; at T > 0 multiple-try Metropolis
      (see :func:`amc`).
    minibatch: evaluate the current params' loss on every step.
    signal_norm: step sizes :math:`\lambda_i \sigma` from the signal feeding
      each neuron; see :func:`amc`.
    seed: an int or a ``jax.random.key``.
    sequential: a :class:`~amc_jax.SequentialTest`; see :func:`amc`.
    proposal_batch_size: trials evaluated at a time with ``num_proposals``;
      with one trial, ``1`` keeps no move and draws an accepted move again
      (one copy of the params less); see :func:`amc`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; see :func:`amc`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> tx = amc_jax.metropolis(sigma=0.5, temperature=1.0, seed=1)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> energy = lambda x: 0.5 * jnp.sum(x**2)
    >>> updates, state = tx.update(None, state, params, value_fn=energy)
    >>> params = optax.apply_updates(params, updates)
    >>> int(state.count)
    1

  References:
    Metropolis, Rosenbluth, Rosenbluth, Teller, Teller, Equation of state
    calculations by fast computing machines, J. Chem. Phys. 21, 1087 (1953).
  """
  base.check_positive("sigma", sigma)
  return amc(
      sigma,
      epsilon=0.0,
      n_reset=_NEVER_RESET,
      sigma_decay=1.0,
      temperature=temperature,
      proposal=proposal,
      num_proposals=num_proposals,
      minibatch=minibatch,
      signal_norm=signal_norm,
      seed=seed,
      sequential=sequential,
      proposal_batch_size=proposal_batch_size,
  )
