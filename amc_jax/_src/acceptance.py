"""The acceptance rules: Metropolis(-Hastings), multiple-try Metropolis, and
the temperature (a constant, a schedule or a per-step override). The loss
checks and the NaN guards are in :mod:`amc_jax._src.loss`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from amc_jax._src import base


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
