"""The acceptance rules of ``amc_jax._src.acceptance``, one function at a
time, against an independent NumPy implementation of the same formulas (the
uniforms and categorical draws are JAX's, read back, so every decision can be
replayed exactly). Each test also runs a deliberately wrong rule and checks
that the comparison catches it. Whole chains sampling the Boltzmann
distribution are in test_boltzmann.py and test_multiple_try.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from amc_jax._src import acceptance

N = 4000


def _cases(seed=0, n=N):
  """Current and proposed losses, temperatures (a quarter of them 0) and log
  Hastings ratios, with some non-finite proposals."""
  rng = np.random.default_rng(seed)
  current = rng.normal(size=n).astype(np.float32)
  proposed = (current + rng.normal(scale=0.5, size=n)).astype(np.float32)
  proposed[rng.random(n) < 0.05] = np.nan
  proposed[rng.random(n) < 0.02] = np.inf
  temperature = rng.choice([0.0, 0.1, 0.5, 2.0], size=n).astype(np.float32)
  log_ratio = rng.normal(scale=0.3, size=n).astype(np.float32)
  keys = jax.random.split(jax.random.key(seed), n)
  u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys), np.float64)
  return current, proposed, temperature, log_ratio, keys, u


def numpy_metropolis(current, proposed, temperature, log_ratio, u, exponent=1.0):
  """Accept iff U' is finite and dU <= 0 at T = 0, or log u < -dU/T + log q_r
  at T > 0 (with log q_r = 0 also every dU <= 0); ``exponent`` != 1 is the
  wrong variant."""
  c, p, t, lr = (np.asarray(a, np.float64) for a in (current, proposed, temperature, log_ratio))
  finite = np.isfinite(p)
  delta = np.where(finite, p - c, 0.0)
  hot = t > 0
  log_p = np.where(hot, -exponent * delta / np.where(hot, t, 1.0) + lr, -np.inf)
  symmetric = np.all(lr == 0)
  accepted = finite & np.where(hot, np.log(u) < log_p, delta <= 0)
  if symmetric:
    accepted |= finite & (delta <= 0)
  prob = np.where(finite, np.where(hot, np.exp(np.minimum(log_p, 0.0)), delta <= 0), 0.0)
  if symmetric:
    prob = np.where(finite & (delta <= 0), 1.0, prob)
  return accepted, prob


def _decide(current, proposed, temperature, log_ratio, keys):
  """JAX's decisions; an all-zero ``log_ratio`` is passed as the Python 0.0 of
  a symmetric move (the rule's static branch)."""
  if np.all(log_ratio == 0):
    decide = jax.vmap(lambda k, c, p, t: acceptance.metropolis_decision(k, c, p, t))
    d = jax.jit(decide)(keys, current, proposed, temperature)
  else:
    decide = jax.vmap(lambda k, c, p, t, lr: acceptance.metropolis_decision(k, c, p, t, lr))
    d = jax.jit(decide)(keys, current, proposed, temperature, log_ratio)
  return np.asarray(d.accepted), np.asarray(d.acceptance_probability)


def _near_boundary(current, proposed, temperature, log_ratio, u):
  """Cases whose decision is within float32 rounding of the threshold."""
  c, p, t, lr = (np.asarray(a, np.float64) for a in (current, proposed, temperature, log_ratio))
  margin = np.abs(np.log(u) - (-(p - c) / np.where(t > 0, t, 1.0) + lr))
  return (t > 0) & np.isfinite(p) & (margin < 1e-4)


@pytest.mark.parametrize("hastings", [False, True])
def test_metropolis_decision_replays_the_numpy_rule(hastings):
  current, proposed, temperature, log_ratio, keys, u = _cases(seed=int(hastings))
  if not hastings:
    log_ratio = np.zeros_like(log_ratio)
  ours, prob = _decide(current, proposed, temperature, log_ratio, keys)
  theirs, their_prob = numpy_metropolis(current, proposed, temperature, log_ratio, u)
  edge = _near_boundary(current, proposed, temperature, log_ratio, u)
  np.testing.assert_array_equal(ours[~edge], theirs[~edge])
  assert edge.sum() < 5
  np.testing.assert_allclose(prob, their_prob, rtol=1e-5, atol=1e-6)
  assert not ours[~np.isfinite(proposed)].any()  # a non-finite loss is never accepted
  assert np.all(prob[~np.isfinite(proposed)] == 0)
  # Both outcomes occur at every T > 0, so the replay tested something.
  for t in (0.1, 0.5, 2.0):
    assert 0 < ours[temperature == t].mean() < 1
  # The wrong variant, dU/T counted twice, disagrees with what JAX decided.
  wrong, _ = numpy_metropolis(current, proposed, temperature, log_ratio, u, exponent=2.0)
  assert np.sum(wrong != ours) > 50


def test_cold_is_the_zero_temperature_decision_without_the_uniform():
  current, proposed, _, _, keys, _ = _cases(seed=2)
  zero = np.zeros_like(current)
  hot_rule, hot_prob = _decide(current, proposed, zero, np.zeros_like(current), keys)
  cold = jax.jit(jax.vmap(lambda k, c, p: acceptance.metropolis_decision(
      k, c, p, jnp.float32(0.0), cold=True)))(keys, current, proposed)
  np.testing.assert_array_equal(np.asarray(cold.accepted), hot_rule)
  np.testing.assert_array_equal(np.asarray(cold.acceptance_probability), hot_prob)
  # At T = 0 only downhill and level moves with a finite loss pass.
  ok = np.isfinite(proposed) & (proposed <= current)
  np.testing.assert_array_equal(hot_rule, ok)
  # cold=True draws no uniform: the compiled decision has no random bits.
  hlo = jax.jit(lambda k: acceptance.metropolis_decision(
      k, jnp.float32(1.0), jnp.float32(0.5), jnp.float32(0.0), cold=True).accepted
  ).lower(jax.random.key(0)).as_text()
  assert "threefry" not in hlo


def test_temperature_at_reads_constants_and_schedules_and_the_override_checks():
  schedule = optax.linear_schedule(1.0, 0.0, 10)
  assert float(acceptance.temperature_at(0.5, jnp.int32(3))) == 0.5
  assert float(acceptance.temperature_at(schedule, jnp.int32(5))) == pytest.approx(0.5)
  assert acceptance.temperature_at(schedule, jnp.int32(5)).dtype == jnp.float32
  assert float(acceptance.temperature_override(0.25)) == 0.25
  with pytest.raises(TypeError, match="this step's temperature"):
    acceptance.temperature_override(schedule)
  with pytest.raises(ValueError):
    acceptance.temperature_override(-1.0)


def test_best_index_is_the_lowest_finite_loss():
  assert int(acceptance.best_index(jnp.array([3.0, jnp.nan, 1.0, -jnp.inf, 2.0]))) == 2
  assert int(acceptance.best_index(jnp.array([jnp.nan, jnp.inf]))) == 0


def test_multiple_try_select_draws_in_proportion_to_the_weights():
  """T > 0: trial j with probability w_j / sum w, w_j = exp(-U_j/T) q_r^(1/2).
  The frequencies over 20000 keys match within 4 binomial standard errors;
  the wrong weights exp(-2 U_j / T) do not."""
  losses = jnp.array([0.3, 0.1, jnp.nan, 0.6], jnp.float32)
  log_ratios = jnp.array([0.0, 0.4, 0.0, -0.2], jnp.float32)
  t = jnp.float32(0.2)
  n = 20000
  keys = jax.random.split(jax.random.key(7), n)
  chosen = np.asarray(jax.jit(jax.vmap(
      lambda k: acceptance.multiple_try_select(k, jnp.float32(0.2), losses, log_ratios, t)))(keys))
  freq = np.bincount(chosen, minlength=4) / n

  def expected(factor):
    lw = np.where(np.isfinite(np.asarray(losses)), -factor * np.nan_to_num(np.asarray(
        losses, np.float64)) / 0.2 + 0.5 * np.asarray(log_ratios, np.float64), -np.inf)
    w = np.exp(lw - lw.max())
    return w / w.sum()

  err = np.sqrt(expected(1.0) * (1 - expected(1.0)) / n) + 1e-12
  assert np.all(np.abs(freq - expected(1.0)) < 4 * err)
  assert freq[2] == 0  # a NaN loss has weight 0
  assert np.any(np.abs(freq - expected(2.0)) > 10 * err)  # the wrong variant
  # T = 0: the best trial.
  assert int(acceptance.multiple_try_select(keys[0], jnp.float32(0.2), losses, log_ratios,
                                            jnp.float32(0.0))) == 1


def _numpy_mtm(current, losses, log_ratios, chosen, ref_losses, ref_log_ratios, t, u):
  """alpha = sum_k w(y_k, x) / sum_k w(x*_k, y), with x*_K = x (Liu, Liang and Wong 2000)."""
  f = lambda a: np.asarray(a, np.float64)
  w = lambda l, lr: np.where(np.isfinite(f(l)), np.exp(-(np.nan_to_num(f(l)) - current) / t
                                                       + 0.5 * f(lr)), 0.0)
  top = w(losses, log_ratios).sum()
  bottom = w(ref_losses, ref_log_ratios).sum() + np.exp(-0.5 * f(log_ratios)[chosen])
  alpha = min(1.0, top / bottom)
  return (np.isfinite(f(losses)[chosen]) and np.log(u) < np.log(top / bottom)), alpha


def test_multiple_try_decision_replays_the_numpy_rule():
  rng = np.random.default_rng(3)
  decide = jax.jit(acceptance.multiple_try_decision)
  agree = wrong_agree = 0
  for i in range(300):
    k = int(rng.integers(2, 6))
    current = np.float32(rng.normal())
    losses = (current + rng.normal(scale=0.3, size=k)).astype(np.float32)
    log_ratios = rng.normal(scale=0.2, size=k).astype(np.float32)
    chosen = int(rng.integers(k))
    ref = (losses[chosen] + rng.normal(scale=0.3, size=k - 1)).astype(np.float32)
    ref_lr = rng.normal(scale=0.2, size=k - 1).astype(np.float32)
    t = np.float32(rng.choice([0.1, 0.5]))
    key = jax.random.key(i)
    u = float(jax.random.uniform(key, (), jnp.float32))
    d = decide(key, current, losses, log_ratios, jnp.int32(chosen), ref, ref_lr, t)
    accepted, alpha = _numpy_mtm(current, losses, log_ratios, chosen, ref, ref_lr, t, u)
    assert float(d.acceptance_probability) == pytest.approx(alpha, rel=1e-4, abs=1e-6)
    agree += bool(d.accepted) == accepted
    # The wrong variant: x left out of the references.
    wrong = np.isfinite(losses[chosen]) and np.log(u) < np.log(
        np.exp(-(losses.astype(np.float64) - current) / t + 0.5 * log_ratios).sum()
        / np.exp(-(ref.astype(np.float64) - current) / t + 0.5 * ref_lr).sum())
    wrong_agree += bool(d.accepted) == wrong
  assert agree >= 299  # one decision may fall within rounding of the threshold
  assert wrong_agree < 290
  # T = 0: the chosen trial is accepted iff its loss does not exceed U(x); a NaN never.
  args = (jnp.array([0.5, 2.0]), jnp.zeros(2), jnp.int32(0), jnp.array([0.0]), jnp.zeros(1),
          jnp.float32(0.0))
  assert bool(decide(jax.random.key(0), jnp.float32(1.0), *args).accepted)
  assert not bool(decide(jax.random.key(0), jnp.float32(0.4), *args).accepted)
  nan = (jnp.array([jnp.nan, 2.0]),) + args[1:]
  assert not bool(decide(jax.random.key(0), jnp.float32(1.0), *nan).accepted)
