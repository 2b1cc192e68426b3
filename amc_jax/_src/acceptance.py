"""The Metropolis acceptance rule, temperatures, and the NaN/inf guards."""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from amc_jax._src import base
from amc_jax._src import proposals


class Decision(NamedTuple):
  """Outcome of the acceptance test for one proposal."""

  accepted: jax.Array  # bool scalar
  acceptance_probability: jax.Array  # min(1, exp(-dU/T)); 0 for a non-finite U'


def temperature_at(temperature: base.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """The temperature at step ``count``: a constant or ``schedule(count)``."""
  t = temperature(count) if callable(temperature) else temperature
  return jnp.asarray(t).astype(base.loss_dtype())


def temperature_override(temperature: Any) -> jax.Array:
  """A per-step ``temperature=`` argument of ``tx.update``, checked and cast."""
  if callable(temperature):
    raise TypeError(
        "the temperature= argument of tx.update is this step's temperature, a"
        " number; give schedules to the transformation itself."
    )
  base.check_temperature(temperature)
  return jnp.asarray(temperature).astype(base.loss_dtype())


def metropolis_decision(
    key: jax.Array,
    current_loss: jax.Array,
    proposed_loss: jax.Array,
    temperature: jax.Array,
    log_ratio: Any = 0.0,
    *,
    cold: bool = False,
) -> Decision:
  r"""The Metropolis(-Hastings) criterion :math:`\min(1, e^{-\Delta U/T} q_r)`.

  * A proposal whose loss is NaN or +-inf is always rejected.
  * At ``T <= 0`` (zero temperature, or a schedule that has reached 0) a move
    is accepted iff :math:`\Delta U = U(x') - U(x) \le 0`; no uphill move.
  * At ``T > 0`` the move is accepted when
    :math:`\log u < -\Delta U/T + \log q_r` for
    ``u = jax.random.uniform(key)``, where
    :math:`\log q_r = \log q(x \mid x') - \log q(x' \mid x)` is the
    proposal's ``log_ratio`` (0 for a symmetric move: plain Metropolis, where
    a move with :math:`\Delta U \le 0` is always accepted).

  Args:
    key: PRNG key for the uniform draw (drawn whatever the temperature, so the
      random stream does not depend on it).
    current_loss: U(x), a finite scalar.
    proposed_loss: U(x'), any scalar.
    temperature: T, a scalar.
    log_ratio: the proposal's log Hastings ratio, a scalar (see
      :class:`amc_jax.proposals.Proposal`).
    cold: the caller knows that T is the constant 0: the uniform is not
      drawn (the decision, and every other random number, is the same).

  Returns:
    A :class:`Decision`.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> key = jax.random.key(0)
    >>> d = amc_jax.metropolis_decision(key, jnp.float32(1.0), jnp.float32(0.5), jnp.float32(0.0))
    >>> bool(d.accepted), float(d.acceptance_probability)   # downhill: always accepted
    (True, 1.0)
    >>> d = amc_jax.metropolis_decision(key, jnp.float32(1.0), jnp.float32(2.0), jnp.float32(0.5))
    >>> round(float(d.acceptance_probability), 4)            # uphill at T = 0.5: exp(-1 / 0.5)
    0.1353
  """
  finite = jnp.isfinite(proposed_loss)
  delta = proposed_loss - current_loss
  if cold:
    accepted = finite & (delta <= 0)
    return Decision(accepted=accepted, acceptance_probability=accepted.astype(delta.dtype))
  u = jax.random.uniform(key, (), current_loss.dtype)
  hot = temperature > 0
  safe_t = jnp.where(hot, temperature, jnp.ones_like(temperature))
  log_p = jnp.where(hot, -delta / safe_t, -jnp.inf)
  if base.is_static_zero(log_ratio):
    # Symmetric move: downhill is always accepted, uphill with exp(-dU/T).
    downhill = finite & (delta <= 0)
    uphill_ok = finite & hot & (jnp.log(u) < log_p)
    accepted = downhill | uphill_ok
    prob = jnp.where(
        downhill, jnp.ones_like(delta), jnp.where(finite, jnp.exp(jnp.minimum(log_p, 0)), 0)
    )
  else:
    log_ratio = jnp.asarray(log_ratio).astype(delta.dtype)
    log_p = jnp.where(hot, log_p + log_ratio, log_p)
    cold_ok = finite & ~hot & (delta <= 0)
    hot_ok = finite & hot & (jnp.log(u) < log_p)
    accepted = cold_ok | hot_ok
    prob = jnp.where(
        finite,
        jnp.where(hot, jnp.exp(jnp.minimum(log_p, 0)), cold_ok.astype(delta.dtype)),
        0,
    )
  return Decision(accepted=accepted, acceptance_probability=prob.astype(delta.dtype))


def _log_weights(losses: jax.Array, log_ratios: jax.Array, current: jax.Array, t: jax.Array) -> jax.Array:
  """log w(y, x) = -(U(y) - U(x))/T + log_ratio(x -> y)/2, and -inf where U(y) is not finite.

  The weight of Liu, Liang and Wong (2000) with
  lambda(x, y) = (q(y|x) q(x|y))^(-1/2), which needs only the proposal's log
  Hastings ratio; shifting by U(x)/T changes every weight by the same factor.
  """
  ok = jnp.isfinite(losses)
  safe = jnp.where(ok, losses - current, jnp.zeros_like(losses))
  return jnp.where(ok, -safe / t + 0.5 * log_ratios.astype(losses.dtype), -jnp.inf)


def best_index(losses: jax.Array) -> jax.Array:
  """The index of the lowest finite loss (0 if none is finite)."""
  return jnp.argmin(jnp.where(jnp.isfinite(losses), losses, jnp.inf))


def multiple_try_select(
    key: jax.Array,
    current_loss: jax.Array,
    losses: jax.Array,
    log_ratios: jax.Array,
    temperature: jax.Array,
) -> jax.Array:
  r"""Which of K trials a multiple-try step considers.

  At ``T > 0``: trial :math:`j` with probability
  :math:`w_j / \sum_k w_k`, :math:`w_j = e^{-U(y_j)/T}
  \sqrt{q(x|y_j)/q(y_j|x)}` (multiple-try Metropolis, Liu, Liang and Wong
  2000). At ``T <= 0``: the trial of lowest loss. Non-finite losses have
  weight 0 and are never chosen over a finite one.
  """
  hot = temperature > 0
  safe_t = jnp.where(hot, temperature, jnp.ones_like(temperature))
  log_w = _log_weights(losses, log_ratios, current_loss, safe_t)
  drawn = jax.random.categorical(key, log_w)
  return jnp.where(hot, drawn, best_index(losses)).astype(jnp.int32)


def multiple_try_decision(
    key: jax.Array,
    current_loss: jax.Array,
    losses: jax.Array,
    log_ratios: jax.Array,
    chosen: jax.Array,
    reference_losses: jax.Array,
    reference_log_ratios: jax.Array,
    temperature: jax.Array,
) -> Decision:
  r"""The acceptance test of multiple-try Metropolis (Liu, Liang and Wong 2000).

  Trials :math:`y_1..y_K \sim q(\cdot|x)`, the chosen :math:`y = y_j`
  (:func:`multiple_try_select`), references
  :math:`x^*_1..x^*_{K-1} \sim q(\cdot|y)` and :math:`x^*_K = x`; with
  :math:`w(a, b) = e^{-U(a)/T} \sqrt{q(b|a)/q(a|b)}`,

  .. math::
    \alpha = \min\Big(1, \frac{\sum_k w(y_k, x)}{\sum_k w(x^*_k, y)}\Big),

  which leaves :math:`e^{-U/T}` invariant (detailed balance, their Eq. 3 with
  :math:`\lambda(x, y) = (q(y|x) q(x|y))^{-1/2}`). At ``T <= 0`` the chosen
  (lowest-loss) trial is accepted iff its loss does not exceed U(x). A
  non-finite chosen loss is always rejected.

  Args:
    key: PRNG key for the uniform draw.
    current_loss: U(x).
    losses: U(y_k), shape (K,).
    log_ratios: log q(x|y_k) - log q(y_k|x), shape (K,).
    chosen: the index j of the chosen trial.
    reference_losses: U(x*_k), shape (K - 1,).
    reference_log_ratios: log q(y|x*_k) - log q(x*_k|y), shape (K - 1,).
    temperature: T.

  Returns:
    A :class:`Decision` for the chosen trial.
  """
  u = jax.random.uniform(key, (), current_loss.dtype)
  hot = temperature > 0
  safe_t = jnp.where(hot, temperature, jnp.ones_like(temperature))
  loss = losses[chosen]
  finite = jnp.isfinite(loss)
  log_w = _log_weights(losses, log_ratios, current_loss, safe_t)
  # x itself is the K-th reference: w(x, y) = exp(-U(x)/T) sqrt(q(y|x)/q(x|y)).
  log_w_x = -0.5 * log_ratios[chosen].astype(current_loss.dtype)
  log_w_ref = jnp.concatenate([
      _log_weights(reference_losses, reference_log_ratios, current_loss, safe_t),
      log_w_x[None],
  ])
  log_alpha = jax.nn.logsumexp(log_w) - jax.nn.logsumexp(log_w_ref)
  hot_ok = finite & (jnp.log(u) < log_alpha)
  cold_ok = finite & (loss - current_loss <= 0)
  accepted = jnp.where(hot, hot_ok, cold_ok)
  prob = jnp.where(
      hot, jnp.where(finite, jnp.exp(jnp.minimum(log_alpha, 0)), 0), cold_ok.astype(loss.dtype)
  )
  return Decision(accepted=accepted, acceptance_probability=prob.astype(loss.dtype))


def as_loss(value: Any, what: str) -> jax.Array:
  """Checks that a loss is a real scalar and casts it to the loss dtype."""
  arr = jnp.asarray(value)
  if arr.shape != ():
    raise ValueError(
        f"{what} must be a scalar loss, got an array of shape {arr.shape}."
        " Reduce it (e.g. with .mean()) inside the loss function."
    )
  if not (jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)):
    raise TypeError(f"{what} must be a real number, got dtype {arr.dtype}.")
  return arr.astype(base.loss_dtype())


def evaluate(value_fn: Callable[..., Any], params: Any, what: str = "value_fn(params)") -> jax.Array:
  """Evaluates ``value_fn(params)`` and checks that it is a real scalar."""
  return as_loss(value_fn(params), what)


def as_loss_and_scales(value: Any, params: Any, what: str) -> tuple[jax.Array, Any]:
  """Checks a ``(loss, scales)`` pair, as returned by a signal-norm loss.

  The loss must be a real scalar; ``scales`` a pytree like ``params`` whose
  leaves broadcast to the params leaves. The scales are returned broadcast to
  the params' shapes and cast to their dtypes, so that they can be cached in a
  state of fixed structure.
  """
  if not (isinstance(value, (tuple, list)) and len(value) == 2):
    raise TypeError(
        f"With signal_norm=True, {what} must return a pair (loss, scales), the"
        " scales a pytree like params of the multipliers lambda_i (for flax"
        " models use amc_jax.signal_norm_value_fn or amc_jax.signal_norm_apply);"
        f" got {type(value).__name__}."
    )
  loss, scales = value
  loss = as_loss(loss, f"the loss returned by {what}")
  proposals.check_scales(scales, params)
  scales = jax.tree_util.tree_map(
      lambda s, p: jnp.broadcast_to(jnp.asarray(s).astype(jnp.result_type(p)), jnp.shape(p)),
      scales,
      params,
  )
  return loss, scales


def evaluate_with_scales(
    value_fn: Callable[..., Any], params: Any, what: str = "value_fn(params)"
) -> tuple[jax.Array, Any]:
  """Evaluates a signal-norm ``value_fn(params) -> (loss, scales)`` and checks it."""
  return as_loss_and_scales(value_fn(params), params, what)


_BAD_CURRENT_LOSS = "amc_jax: the loss of the current params is nan (or -inf)"


def _not_our_error(record: logging.LogRecord) -> bool:
  # jax's pure_callback logs every exception of a callback with its traceback
  # ("jax.pure_callback failed") and then raises it again inside a
  # JaxRuntimeError, so an uncaught NaN error printed its message twice. The
  # JaxRuntimeError already carries the message and the traceback; drop the
  # log record for this one error (other callbacks' records are untouched).
  exc = record.exc_info[1] if record.exc_info else None
  return not (isinstance(exc, FloatingPointError) and str(exc).startswith(_BAD_CURRENT_LOSS))


logging.getLogger("jax._src.callback").addFilter(_not_our_error)


def _raise_bad_current_loss(bad, step=None):
  """Host side of the guard: raises if any loss is bad, else returns "not bad".

  ``step`` (the state's count, per chain under ``vmap``) names where.
  """
  bad = np.asarray(bad)
  if np.any(bad):
    where = ""
    if step is not None:
      steps = np.broadcast_to(np.asarray(step), bad.shape)
      if bad.ndim == 0:
        where = f" at step {int(steps)}"
      else:
        chains = np.argwhere(bad)
        shown = ", ".join(
            f"chain {tuple(int(i) for i in c) if len(c) > 1 else int(c[0])} at step {int(steps[tuple(c)])}"
            for c in chains[:5]
        )
        where = f" ({shown}{', ...' if len(chains) > 5 else ''})"
      where += (" (the state's count: steps this state has taken; in amc_jax.fit"
                " also the index t of that step's minibatch, drawn with"
                " jax.random.fold_in(data_key, t))")
    raise FloatingPointError(
        _BAD_CURRENT_LOSS + where + "; a Monte"
        " Carlo step needs a finite current loss to compare proposals against"
        " (check the initial params, the data of this step, or the value="
        " argument)."
    )
  return np.zeros(bad.shape, bool)


def _is_bad(loss: jax.Array) -> jax.Array:
  return jnp.isnan(loss) | (loss == -jnp.inf)


def _keep_alive(loss: jax.Array, still_bad: jax.Array) -> jax.Array:
  # Makes the returned loss depend on the guard, so that XLA keeps it. Not a
  # select between NaN and the loss: XLA folds that away when the loss itself
  # is a constant NaN, which is exactly when the guard must run.
  return loss + jnp.where(still_bad, jnp.full_like(loss, jnp.nan), jnp.zeros_like(loss))


def _host_check(bad: jax.Array, step: Optional[jax.Array] = None) -> jax.Array:
  """Runs :func:`_raise_bad_current_loss` on the host, once for all chains."""
  args = (bad,) if step is None else (bad, jnp.broadcast_to(step, jnp.shape(bad)))
  return jax.pure_callback(
      _raise_bad_current_loss,
      jax.ShapeDtypeStruct(jnp.shape(bad), jnp.bool_),
      *args,
      vmap_method="expand_dims",
  )


def checked_in_place(loss: jax.Array, step: Optional[jax.Array] = None) -> jax.Array:
  """The host check of :func:`check_current_loss`, without its loop.

  For code that already runs rarely (the first-step evaluation of batch
  mode): the callback runs every time this code does.
  """
  bad = _is_bad(loss)
  if base.is_concrete(bad) and (step is None or base.is_concrete(step)):
    _raise_bad_current_loss(bad, None if step is None else np.asarray(step))
    return loss
  return _keep_alive(loss, _host_check(bad, step))


def check_current_loss(loss: jax.Array, step: Optional[jax.Array] = None) -> jax.Array:
  """Raises ``FloatingPointError`` if the current loss is NaN or -inf.

  +inf is allowed: any finite proposal is then accepted. A concrete value is
  checked at once; a traced one by a host callback that sits inside a
  ``lax.while_loop`` that runs zero times unless the loss is bad, so a healthy
  step makes no host callback. Under ``vmap`` the loop runs if any chain is
  bad, and the callback is vectorised (``vmap_method="expand_dims"``): one
  callback for the whole ensemble, not one per chain. Under ``jit`` the error
  surfaces as a ``JaxRuntimeError`` whose text contains this message, and
  the step (``step``, the state's count, when given) where it happened.
  """
  bad = _is_bad(loss)
  if base.is_concrete(bad) and (step is None or base.is_concrete(step)):
    _raise_bad_current_loss(bad, None if step is None else np.asarray(step))
    return loss

  # The loop's result feeds the returned loss, so XLA cannot drop the loop as
  # dead code. Only the flag enters the loop: passing the loss in as well made
  # every step of a scan several times slower on XLA:CPU.
  still_bad = lax.while_loop(lambda b: b, lambda b: _host_check(b, step), bad)
  return _keep_alive(loss, still_bad)
