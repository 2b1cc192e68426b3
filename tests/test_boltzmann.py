"""Finite temperature samples the Boltzmann distribution.

At T > 0 the Metropolis rule min(1, exp(-dU/T)) with a symmetric proposal
satisfies detailed balance with respect to exp(-U/T), so a long chain samples
that distribution (Metropolis et al. 1953; Eq. 1 of Whitelam et al. 2022).

Two kinds of test:

* the acceptance rule itself against its closed form: for a fixed current
  loss, the frequency with which many independent uniforms accept an uphill
  move is exp(-dU/T) within a binomial error bar; downhill moves are always
  accepted; T = 0 never goes uphill; NaN and inf proposals are never accepted;
  and one full step of :func:`amc_jax.metropolis` from a fixed x accepts with
  the probability that the Gaussian proposal and the rule give together;
* the whole chain: for U(x) = |x|^2 / 2 in d = 1 and d = 10 dimensions the
  Boltzmann distribution is N(0, T) in every coordinate, so the long-run
  E[x_i^2] must equal T. The tolerance is 5 standard errors, with the standard
  error taken from the effective sample size (integrated autocorrelation time
  by Sokal's automatic windowing), not tuned by hand; and the same estimator
  provably separates T from 2T and T/2, the variances that a factor-2 error in
  the exponent of the rule would give.

Seeds are fixed and were not searched for. Each 5-sigma check has a
false-failure probability of about 6e-7 under the normal approximation; the
file makes about 20 of them, so about 1e-5 in all.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax

T = 0.5
N_SIGMA = 5.0  # two-sided normal tail beyond 5 sigma: 5.7e-7
N_CHAINS = 64
N_BURN = 2_000
N_KEEP = 20_000
SEED = 0


# --------------------------------------------------------------------------
# Error bars for correlated samples.


def integrated_autocorr_time(series: np.ndarray, c: float = 5.0) -> tuple[float, int]:
  """Integrated autocorrelation time of M independent chains of one process.

  ``series`` has shape (n, M): n successive values of an observable in each
  of M independent chains that sample the same stationary distribution.

  The normalised autocovariance rho(t) is estimated with an FFT, the chains'
  estimates averaged (Goodman and Weare 2010; emcee's ``autocorr``), which
  reduces the noise of one chain's estimate by sqrt(M). Fluctuations are
  taken about the grand mean, not each chain's own mean, so that chains that
  disagree inflate tau rather than hide. Then

    tau(W) = 1 + 2 * sum_{t=1}^{W} rho(t),

  with Sokal's automatic window (Sokal 1997, "Monte Carlo methods in
  statistical mechanics", Sec. 3): the smallest W with W >= c * tau(W), c = 5.
  The sum beyond the window is mostly noise; inside it, the truncation bias
  is of order exp(-c). The relative variance of tau from one chain is about
  2 (2W + 1) / n (Sokal's Eq. 3.19), so with n >= 200 tau (checked by the
  tests below), W ~ 5 tau and M = 64 chains averaged, tau is known to a few
  percent, and the standard error to half that.

  Returns:
    (tau, W). The variance of the mean of N = n * M values is then
    var(series) * tau / N, i.e. the effective sample size is N / tau.
  """
  n = series.shape[0]
  y = series - series.mean()
  f = np.fft.rfft(y, n=2 * n, axis=0)  # zero-padded: no wrap-around
  acov = np.fft.irfft(f * np.conj(f), n=2 * n, axis=0)[:n].mean(axis=1) / n
  rho = acov / acov[0]
  tau = 2.0 * np.cumsum(rho) - 1.0  # tau[W] = 1 + 2 sum_{t=1}^{W} rho(t)
  ok = np.arange(n) >= c * tau
  if not ok.any():
    raise AssertionError(f"autocorrelation window not found: n={n} too short")
  window = int(np.argmax(ok))
  return float(tau[window]), window


class Estimate(NamedTuple):
  """The mean of an observable over all chains and steps, with its error bar."""

  value: float
  se: float  # standard error: std / sqrt(ess)
  tau: float  # integrated autocorrelation time, in steps
  ess: float  # effective sample size: n * M / tau

  def z(self, expected: float) -> float:
    return (self.value - expected) / self.se


def estimate(series: np.ndarray) -> Estimate:
  """Mean of ``series`` (steps x chains) with its ESS-based standard error."""
  series = np.asarray(series, np.float64)
  tau, _ = integrated_autocorr_time(series)
  ess = series.size / tau
  return Estimate(float(series.mean()), float(series.std() / math.sqrt(ess)), tau, ess)


# --------------------------------------------------------------------------
# The acceptance rule against its closed form.

_decide = jax.jit(
    jax.vmap(amc_jax.metropolis_decision, in_axes=(0, None, None, None))
)


def _decisions(case: int, current: float, proposed: float, temperature: float, n: int):
  keys = jax.random.split(jax.random.fold_in(jax.random.key(SEED), case), n)
  decision = _decide(
      keys,
      jnp.asarray(current, jnp.float32),
      jnp.asarray(proposed, jnp.float32),
      jnp.asarray(temperature, jnp.float32),
  )
  return np.asarray(decision.accepted), np.asarray(decision.acceptance_probability)


# (dU, T) pairs; the losses are dyadic, so U' - U is exact in float32.
UPHILL = [(0.0625, 2.0), (0.0625, 0.5), (0.5, 0.5), (1.0, 2.0), (1.0, 0.5), (1.5, 0.5)]


def test_uphill_acceptance_frequency_is_exp_minus_du_over_t():
  """An uphill move is accepted with probability exp(-dU/T), no more, no less.

  For each (dU, T), 200000 independent uniforms decide the same move. The
  number accepted is Binomial(n, p) with p = exp(-dU/T) (from 0.97 down to
  0.05 over the grid), so the frequency must lie within 5 binomial standard
  errors sqrt(p (1 - p) / n) of p (about 0.2% to 0.5% absolute here). The
  reported acceptance probability must be p itself.
  """
  n = 200_000
  current = 1.25
  for case, (du, t) in enumerate(UPHILL):
    accepted, prob = _decisions(case, current, current + du, t, n)
    p = math.exp(-du / t)
    se = math.sqrt(p * (1.0 - p) / n)
    freq = accepted.mean()
    assert abs(freq - p) < N_SIGMA * se, (du, t, freq, p, se)
    np.testing.assert_allclose(prob, p, rtol=1e-6)


def test_downhill_and_level_moves_are_always_accepted():
  """dU <= 0 is accepted with probability 1 at every temperature, T = 0 included.

  Also the documented edge: from a current loss of +inf, any finite proposal
  is downhill.
  """
  n = 10_000
  cases = [
      (1.25, p, t)
      for p in (1.25, 1.0, -3.0, -1e30)
      for t in (0.0, 0.5, 1e6)
  ] + [(math.inf, 7.0, t) for t in (0.0, 0.5)]
  for case, (current, proposed, t) in enumerate(cases):
    accepted, prob = _decisions(100 + case, current, proposed, t, n)
    assert accepted.all(), (current, proposed, t)
    np.testing.assert_array_equal(prob, 1.0)


def test_zero_temperature_never_goes_uphill():
  """At T = 0 (and T < 0, which a schedule may reach) no uphill move is accepted.

  Down to the smallest float32 step above the current loss.
  """
  n = 10_000
  current = np.float32(1.25)
  tiny_up = float(np.nextafter(current, np.float32(np.inf)))
  for case, (proposed, t) in enumerate(
      [(tiny_up, 0.0), (1.75, 0.0), (1e30, 0.0), (tiny_up, -1.0)]
  ):
    accepted, prob = _decisions(200 + case, float(current), proposed, t, n)
    assert not accepted.any(), (proposed, t)
    np.testing.assert_array_equal(prob, 0.0)


def test_non_finite_proposals_are_never_accepted():
  """A NaN, +inf or -inf proposed loss is rejected even at a huge temperature.

  -inf would look infinitely downhill and NaN compares false both ways, so
  both need the explicit guard; the reported probability is 0.
  """
  n = 10_000
  for case, (proposed, t) in enumerate(
      (p, t) for p in (math.nan, math.inf, -math.inf) for t in (0.0, 1.0, 1e30)
  ):
    accepted, prob = _decisions(300 + case, 1.25, proposed, t, n)
    assert not accepted.any(), (proposed, t)
    np.testing.assert_array_equal(prob, 0.0)


def _quadratic(x):
  return 0.5 * jnp.sum(x**2)


@functools.partial(jax.jit, static_argnames="n")
def _one_step(x0, sigma, temperature, key, *, n):
  """``n`` independent first steps of metropolis from the same x0.

  A scan over fresh single-chain states, one key each: each step is exactly
  the single-chain program a user runs, and memory stays flat in n.
  """
  tx = amc_jax.metropolis(sigma, temperature)
  state0 = tx.init(x0)

  def body(_, key):
    updates, state = tx.update(
        None, state0._replace(key=key), x0, value_fn=_quadratic
    )
    return None, (updates, state.info, _quadratic(optax.apply_updates(x0, updates)))

  _, out = jax.lax.scan(body, None, jax.random.split(key, n))
  return out


def test_one_metropolis_step_accepts_with_the_closed_form_probability():
  """A full step: Gaussian proposal + rule accept at the predicted rate.

  From x = 0.7 with U = x^2/2, sigma = 0.8 and T = 0.5, 100000 fresh
  chains (independent keys) take one step each. Per chain, the reported
  probability must be min(1, exp(-(U(x') - U(x)) / T)) of its own proposal,
  an accepted move must land exactly where that proposal was evaluated and a rejected one must not move. Over chains, the acceptance
  frequency must match the closed form

    P = E_z[min(1, exp(-((x + sigma z)^2 - x^2) / (2T)))],  z ~ N(0, 1),

  (evaluated by quadrature) within 5 binomial standard errors.
  """
  n, x, sigma = 100_000, 0.7, 0.8
  updates, info, landed = _one_step(
      jnp.full((1,), x, jnp.float32),
      jnp.float32(sigma),
      jnp.float32(T),
      jax.random.key(SEED),
      n=n,
  )
  accepted = np.asarray(info.accepted)
  proposed = np.asarray(info.proposed_loss, np.float64)
  u0 = float(np.float32(0.5) * np.float32(x) ** 2)
  p_each = np.minimum(1.0, np.exp(-(proposed - u0) / T))
  np.testing.assert_allclose(info.acceptance_probability, p_each, rtol=1e-5, atol=1e-7)
  # Bit for bit: params + updates is the proposal that was evaluated.
  np.testing.assert_array_equal(np.asarray(landed)[accepted], proposed[accepted])
  np.testing.assert_array_equal(np.asarray(updates)[~accepted], 0.0)

  z = np.linspace(-12.0, 12.0, 200_001)
  phi = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
  p_step = np.minimum(1.0, np.exp(-((x + sigma * z) ** 2 - x**2) / (2.0 * T)))
  p_exact = np.trapezoid(phi * p_step, z)
  se = math.sqrt(p_exact * (1.0 - p_exact) / n)
  assert abs(accepted.mean() - p_exact) < N_SIGMA * se, (accepted.mean(), p_exact, se)


# --------------------------------------------------------------------------
# Long chains sample exp(-U/T).


def _sigma(d: int) -> float:
  # The optimal random-walk scale for a Gaussian target, ~2.4 sqrt(T/d)
  # (Gelman, Roberts and Gilks 1996): acceptance ~0.44 in 1-D, ~0.26 in 10-D.
  return 2.4 * math.sqrt(T / d)


@functools.partial(jax.jit, static_argnames=("d", "n_chains", "n_burn", "n_keep"))
def _sample(sigma, temperature, key, *, d, n_chains, n_burn, n_keep):
  """Runs ``n_chains`` independent metropolis chains on U = |x|^2/2 in d dims.

  Chains start from N(0, 1) per coordinate (wider than the target N(0, T))
  and run ``n_burn + n_keep`` steps in one scan. sigma and the temperature
  are traced, so the variant temperatures reuse the compiled program. Returns,
  after the burn-in, per step and chain: the coordinate averages of x_i^2 and
  of x_i, and whether the move was accepted.
  """
  tx = amc_jax.metropolis(sigma, temperature)
  start_key, chain_key = jax.random.split(key)
  x = jax.random.normal(start_key, (n_chains, d))
  state = amc_jax.init_ensemble(tx, x, chain_key)
  step = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=_quadratic))

  def body(carry, _):
    x, state = carry
    updates, state = step(x, state)
    x = optax.apply_updates(x, updates)
    return (x, state), (jnp.mean(x**2, axis=1), jnp.mean(x, axis=1), state.info.accepted)

  _, (x2, x1, accepted) = jax.lax.scan(body, (x, state), None, length=n_burn + n_keep)
  return x2[n_burn:], x1[n_burn:], accepted[n_burn:]


def _chains(d: int, temperature: float):
  out = _sample(
      jnp.float32(_sigma(d)),
      jnp.float32(temperature),
      jax.random.key(SEED),
      d=d,
      n_chains=N_CHAINS,
      n_burn=N_BURN,
      n_keep=N_KEEP,
  )
  return tuple(np.asarray(a) for a in out)


@pytest.mark.parametrize("d", [1, 10])
def test_metropolis_samples_the_boltzmann_distribution(d):
  """E[x_i^2] = T for U = |x|^2/2 at T = 0.5, within 5 ESS-based standard errors.

  The observable of a chain at step t is s_t = (1/d) sum_i x_i^2, whose
  average over chains and steps is the variance estimate. The coordinates are
  independent under exp(-U/T) but not along the chain: one accept/reject
  decision moves all of them at once, so their x_i^2 series are
  cross-correlated in time (in 10-D tau(s) is about twice the tau of a single
  x_i^2), and treating them as independent would understate the error bar by
  ~1.4. So tau is measured on s itself, ESS = (steps x chains) / tau, and
  SE = std(s) / sqrt(ESS).

  Also proves: the mean of x_i is 0 within 5 SE (same construction); the run
  is long enough for the error bars to mean something (burn-in >= 20 tau,
  kept steps >= 200 tau per chain, ESS >= 10000, and SE <= 0.5% of T, so
  that a 3% error in the variance would be >= 6 SE; measured: ~0.25%);
  and in 1-D the acceptance rate equals the closed form for a Gaussian target,
  (2/pi) arctan(2 sqrt(T) / sigma).
  """
  x2, x1, accepted = _chains(d, T)
  var = estimate(x2)
  mean = estimate(x1)
  acc = estimate(accepted.astype(np.float64))
  print(
      f"\n[d={d}] sigma={_sigma(d):.4f} chains={N_CHAINS} steps={N_KEEP}"
      f" (+{N_BURN} burn-in)\n"
      f"  E[x^2] = {var.value:.5f} +- {var.se:.5f}  (T={T}, z={var.z(T):+.2f},"
      f" tau={var.tau:.1f}, ESS={var.ess:.0f})\n"
      f"  E[x]   = {mean.value:+.5f} +- {mean.se:.5f}  (z={mean.z(0.0):+.2f},"
      f" tau={mean.tau:.1f}, ESS={mean.ess:.0f})\n"
      f"  acceptance = {acc.value:.4f} +- {acc.se:.4f}  (tau={acc.tau:.1f})"
  )

  for e in (var, mean, acc):
    assert N_BURN >= 20 * e.tau, e
    assert N_KEEP >= 200 * e.tau, e
  assert var.ess >= 10_000, var
  assert var.se <= 0.005 * T, var

  assert abs(var.z(T)) < N_SIGMA, var
  assert abs(mean.z(0.0)) < N_SIGMA, mean
  assert 0.15 < acc.value < 0.6, acc
  if d == 1:
    p_exact = 2.0 / math.pi * math.atan(2.0 * math.sqrt(T) / _sigma(d))
    print(f"  closed-form acceptance = {p_exact:.4f} (z={acc.z(p_exact):+.2f})")
    assert abs(acc.z(p_exact)) < N_SIGMA, (acc, p_exact)


@pytest.mark.parametrize("d", [1, 10])
def test_a_factor_two_error_in_the_exponent_would_be_caught(d):
  """The variance check has the power to reject a wrong acceptance exponent.

  Accepting with exp(-2 dU/T) or exp(-dU/(2T)) instead of exp(-dU/T) is
  exactly the metropolis rule at T/2 or 2T, whose chains sample N(0, T/2) or
  N(0, 2T). Running those rules through the same estimator proves (a) each
  lands within 5 SE of its own temperature (the sampled variance scales with
  T, as exp(-U/T) requires), and (b) each lies more than 5 SE (in fact more
  than 20) from T, so the test above would have failed on either.
  """
  for wrong_t in (2.0 * T, 0.5 * T):
    x2, _, _ = _chains(d, wrong_t)
    var = estimate(x2)
    print(
        f"\n[d={d}] rule at T'={wrong_t}: E[x^2] = {var.value:.5f} +- {var.se:.5f}"
        f"  (z vs T' {var.z(wrong_t):+.2f}, z vs T {var.z(T):+.1f}, ESS={var.ess:.0f})"
    )
    assert var.ess >= 10_000, var
    assert abs(var.z(wrong_t)) < N_SIGMA, var
    assert abs(var.z(T)) > 4 * N_SIGMA, var
