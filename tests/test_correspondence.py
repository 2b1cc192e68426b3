"""The Monte Carlo / gradient-descent correspondence (Whitelam et al. 2021).

Statistical tests use independent chains that each take one step from the
same point, so the M displacements are independent and the effective sample
size is exactly M: the error bar of a mean displacement is the sample
standard deviation over sqrt(M). Seeds are fixed (and were not searched).
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax

SQRT_2PI = math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------
# normalized_sgd (Eq. 49) and the equivalent gradient descent
# --------------------------------------------------------------------------


def test_normalized_sgd_matches_hand_computation():
  params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -1.0])}
  grads = {"w": jnp.array([[0.3, -0.1], [2.0, 0.0]]), "b": jnp.array([-1.5, 0.7])}
  g = np.concatenate([np.ravel(np.asarray(grads["w"], np.float64)), np.asarray(grads["b"], np.float64)])
  norm = np.sqrt(np.sum(g**2))  # the norm over the whole pytree, not per leaf
  alpha = 0.05
  tx = amc_jax.normalized_sgd(alpha)
  updates, _ = tx.update(grads, tx.init(params), params)
  for name in ("w", "b"):
    np.testing.assert_allclose(
        np.asarray(updates[name]), -alpha * np.asarray(grads[name], np.float64) / norm, rtol=1e-6
    )
  new = optax.apply_updates(params, updates)
  step = np.sqrt(sum(np.sum((np.asarray(new[k], np.float64) - np.asarray(params[k], np.float64)) ** 2) for k in params))
  assert step == pytest.approx(alpha, rel=1e-6)  # every step has length alpha


def test_normalized_sgd_zero_gradient_is_a_zero_step_not_nan():
  tx = amc_jax.normalized_sgd(0.1)
  params = {"a": jnp.ones(3), "b": jnp.ones(())}
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  chex.assert_trees_all_equal(updates, zeros)


def test_normalized_sgd_schedule_jit_and_dtype():
  schedule = optax.linear_schedule(0.1, 0.0, 10)
  tx = amc_jax.normalized_sgd(schedule)
  params = jnp.array([3.0, 4.0], jnp.bfloat16)
  state = tx.init(params)
  step = jax.jit(tx.update)
  lengths = []
  for _ in range(3):
    updates, state = step(jnp.array([3.0, 4.0], jnp.bfloat16), state, params)
    assert updates.dtype == jnp.bfloat16
    lengths.append(float(jnp.linalg.norm(updates.astype(jnp.float32))))
  assert step._cache_size() == 1
  np.testing.assert_allclose(lengths, [0.1, 0.09, 0.08], rtol=1e-2)  # bfloat16 rounding


def test_normalized_sgd_converges_to_within_a_step_of_the_minimum():
  loss = lambda p: jnp.sum((p["x"] - 2.0) ** 2) + 10.0 * jnp.sum(p["y"] ** 2)
  params = {"x": jnp.zeros(3), "y": jnp.ones(2)}
  tx = amc_jax.normalized_sgd(1e-2)

  def body(carry, _):
    params, state = carry
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=600))((params, tx.init(params)))
  dist = np.sqrt(np.sum((np.asarray(params["x"]) - 2.0) ** 2) + np.sum(np.asarray(params["y"]) ** 2))
  assert dist < 2e-2  # it oscillates within about one step of the minimum


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_normalized_sgd_rejects_bad_learning_rate(bad):
  with pytest.raises(ValueError, match="learning_rate"):
    amc_jax.normalized_sgd(bad)


def test_equivalent_gradient_descent_rates():
  sigma = 0.3
  assert amc_jax.drift_per_step(sigma) == pytest.approx(sigma / SQRT_2PI)
  assert amc_jax.drift_per_step(sigma, 0.5) == pytest.approx(sigma**2 / (2 * 0.5))
  params = jnp.array([1.0, -2.0, 0.5])
  grads = jnp.array([0.5, 1.0, -2.0])
  hot = amc_jax.equivalent_gradient_descent(sigma, temperature=0.5)
  u, _ = hot.update(grads, hot.init(params), params)
  np.testing.assert_allclose(np.asarray(u), -(sigma**2 / 1.0) * np.asarray(grads), rtol=1e-6)
  cold = amc_jax.equivalent_gradient_descent(sigma)
  u, _ = cold.update(grads, cold.init(params), params)
  g = np.asarray(grads, np.float64)
  np.testing.assert_allclose(np.asarray(u), -(sigma / SQRT_2PI) * g / np.linalg.norm(g), rtol=1e-6)
  with pytest.raises(TypeError, match="fixed temperature"):
    amc_jax.equivalent_gradient_descent(sigma, temperature=optax.constant_schedule(1.0))
  with pytest.raises(ValueError, match="temperature"):
    amc_jax.equivalent_gradient_descent(sigma, temperature=-1.0)
  with pytest.raises(ValueError, match="sigma"):
    amc_jax.drift_per_step(0.0)


# --------------------------------------------------------------------------
# The drift of one Metropolis step, measured over many independent chains
# --------------------------------------------------------------------------


def one_step_displacements(loss, x0, sigma, temperature, n_chains, seed):
  """x' - x0 for n_chains independent one-step Metropolis chains from x0."""
  tx = amc_jax.metropolis(sigma, temperature)
  params = jnp.broadcast_to(x0, (n_chains,) + x0.shape)
  state = amc_jax.init_ensemble(tx, params, jax.random.key(seed))
  updates, state = jax.jit(jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=loss)))(params, state)
  return np.asarray(updates, np.float64), np.asarray(state.n_accept)


def mean_and_error(d):
  """Mean over chains and its standard error (independent chains: ESS = M)."""
  return d.mean(axis=0), d.std(axis=0, ddof=1) / math.sqrt(d.shape[0])


def test_finite_temperature_drift_is_exact_for_a_linear_loss(x64):
  """For U = g.x the mean displacement has a closed form at any sigma:

  E[dx] = -(beta sigma^2 / 2) g * c(y),  c(y) = 2 exp(y^2/2) Phi(-y),
  y = beta |g| sigma  (-> 1 as y -> 0, Eq. 3). At y = 0.5, c = 0.70, a 30 %
  correction the measurement must resolve.
  """
  del x64
  g = jnp.array([0.6, -0.8, 0.0], jnp.float64)  # |g| = 1
  loss = lambda x: jnp.dot(g, x)
  temperature, sigma = 2.0, 1.0  # y = beta |g| sigma = 0.5
  beta = 1.0 / temperature
  y = beta * 1.0 * sigma
  c = 2.0 * math.exp(y**2 / 2) * 0.5 * math.erfc(y / math.sqrt(2.0))
  d, _ = one_step_displacements(loss, jnp.zeros(3, jnp.float64), sigma, temperature, 400_000, seed=0)
  mean, err = mean_and_error(d)
  expected = -(beta * sigma**2 / 2) * np.asarray(g) * c
  assert np.all(np.abs(mean - expected) < 4 * err), (mean, expected, err)
  # The leading-order drift (c = 1) is excluded by the same data.
  assert np.abs(mean[0] - (-(beta * sigma**2 / 2) * 0.6)) > 10 * err[0]


def test_finite_temperature_drift_matches_eq3_on_a_quadratic(x64):
  """U = sum_i a_i x_i^2 / 2 at x0 = 1: E[dx] = -(beta sigma^2 / 2) grad U (Eq. 3).

  y = beta |grad U| sigma = 0.05, so the O(y) correction of the exact
  result above (c = 0.96) and the curvature (a_i sigma^2 ~ 1e-6 against
  |grad U| sigma ~ 4e-4) stay below the tolerance: 4 standard errors plus 5 %.
  A drift of beta sigma^2 (no 1/2) or of T sigma^2 / 2 would be off by
  a factor of 2 or 4, many error bars.
  """
  del x64
  a = jnp.array([1.0, 2.0, 3.0], jnp.float64)
  loss = lambda x: 0.5 * jnp.sum(a * x**2)
  x0 = jnp.ones(3, jnp.float64)
  grad = np.asarray(a)  # grad U at x0
  temperature = 2.0
  beta = 1.0 / temperature
  sigma = 0.05 / (beta * np.linalg.norm(grad))
  rows = [one_step_displacements(loss, x0, sigma, temperature, 1_000_000, seed=s)[0] for s in range(4)]
  mean, err = mean_and_error(np.concatenate(rows))
  expected = -(beta * sigma**2 / 2) * grad
  assert np.all(np.abs(mean - expected) < 4 * err + 0.05 * np.abs(expected)), (mean, expected, err)
  assert np.all(err < 0.1 * np.abs(expected))  # the error bar resolves the drift


def test_zero_temperature_drift_matches_eq6_on_a_quadratic(x64):
  """At T = 0, E[dx] = -(sigma / sqrt(2 pi)) grad U / |grad U| (Eq. 6), and
  half the moves are accepted; sigma small against the curvature scale."""
  del x64
  a = jnp.array([1.0, 2.0, 3.0], jnp.float64)
  loss = lambda x: 0.5 * jnp.sum(a * x**2)
  x0 = jnp.array([1.0, -0.5, 0.25], jnp.float64)
  grad = np.asarray(a * x0)
  sigma = 1e-3
  d, n_accept = one_step_displacements(loss, x0, sigma, 0.0, 1_000_000, seed=1)
  mean, err = mean_and_error(d)
  expected = -(sigma / SQRT_2PI) * grad / np.linalg.norm(grad)
  assert np.all(np.abs(mean - expected) < 4 * err), (mean, expected, err)
  assert np.all(err < 0.02 * np.abs(expected))
  rate = n_accept.mean()
  assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / n_accept.size)


# --------------------------------------------------------------------------
# The correspondence experiment
# --------------------------------------------------------------------------

K_POINTS, HIDDEN = 100, 10
THETA = np.arange(K_POINTS) / K_POINTS
TARGET = np.sin(2 * np.pi * THETA)


def sine_loss(x, data):
  """Eq. 47 with the net of Eq. 48: f(theta) = sum_i x_{3i} tanh(x_{3i+1} theta + x_{3i+2})."""
  theta, target = data
  w = x.reshape(-1, 3)
  out = jnp.sum(w[None, :, 0] * jnp.tanh(theta[:, None] * w[None, :, 1] + w[None, :, 2]), axis=1)
  return jnp.mean((out - target) ** 2)


def numpy_gradient(x):
  """Eq. 50 written out by hand, in float64."""
  w = x.reshape(-1, 3)
  pre = THETA[:, None] * w[:, 1] + w[:, 2]
  t = np.tanh(pre)
  err = t @ w[:, 0] - TARGET
  sech2 = 1 - t**2
  g = np.stack([
      2 / K_POINTS * err @ t,
      2 / K_POINTS * err @ (THETA[:, None] * w[:, 0] * sech2),
      2 / K_POINTS * err @ (w[:, 0] * sech2),
  ], axis=1)
  return g.ravel()


def data():
  return jnp.asarray(THETA, jnp.float32), jnp.asarray(TARGET, jnp.float32)


X0 = np.asarray(1e-2 * jax.random.normal(jax.random.key(0), (3 * HIDDEN,)))


def test_correspondence_records_eq49_and_eq52():
  alpha, lam = 1e-2, 0.5
  sigma = lam * alpha * SQRT_2PI  # Eq. 51
  r = amc_jax.correspondence(
      sine_loss, jnp.asarray(X0), sigma=sigma, learning_rate=alpha, n_chains=64,
      mc_steps=40, n_records=4, n_kept=64, data=data(), seed=3,
  )
  # The time axis: one Monte Carlo step is lambda gradient steps, t = alpha t_gd.
  np.testing.assert_array_equal(r.mc_steps, [0, 10, 20, 30, 40])
  np.testing.assert_array_equal(r.gd_steps, [0, 5, 10, 15, 20])
  np.testing.assert_allclose(r.time, alpha * r.gd_steps, rtol=1e-12)
  assert r.gd_steps_per_mc_step == pytest.approx(lam)
  # Gradient descent is Eq. 49 with the hand gradient of Eq. 50.
  x = X0.astype(np.float64)
  gd = [x]
  for _ in range(20):
    g = numpy_gradient(x)
    x = x - alpha * g / np.linalg.norm(g)
    gd.append(x)
  np.testing.assert_allclose(r.gd, np.stack(gd)[::5], atol=2e-6)
  np.testing.assert_allclose(r.gd_loss, [np.mean((np.tanh(THETA[:, None] * v.reshape(-1, 3)[:, 1] + v.reshape(-1, 3)[:, 2]) @ v.reshape(-1, 3)[:, 0] - TARGET) ** 2) for v in np.stack(gd)[::5]], rtol=1e-5)
  # Delta (Eq. 52) and its finite-ensemble floor, from the kept chains (all of them).
  chains = np.asarray(r.mc_chains, np.float64)  # [records, M, N]
  mean = chains.mean(axis=1)
  np.testing.assert_allclose(r.mc_mean, mean, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(r.delta, np.mean((np.asarray(r.gd, np.float64) - mean) ** 2, axis=1), rtol=1e-4, atol=1e-12)
  np.testing.assert_allclose(r.delta_floor, chains.var(axis=1).mean(axis=1) / 64, rtol=1e-4, atol=1e-12)
  assert r.delta[0] == 0.0 and r.delta_floor[0] == 0.0
  # Every chain starts at X0 and moves: chains differ from each other.
  np.testing.assert_allclose(chains[0], np.broadcast_to(X0, chains[0].shape))
  assert np.all(chains[-1].std(axis=0) > 0)
  np.testing.assert_allclose(
      r.mc_loss_mean, [np.mean([float(sine_loss(jnp.asarray(c), data())) for c in rec]) for rec in chains],
      rtol=1e-5,
  )
  assert np.isnan(r.acceptance[0]) and np.all((r.acceptance[1:] > 0.3) & (r.acceptance[1:] < 0.7))


def test_delta_shrinks_with_the_mutation_scale():
  """Fig. 2 of the paper in miniature: at the same time t, Delta(t) for
  lambda = 0.1 is well below Delta(t) for lambda = 0.5 (Eq. 51)."""
  alpha, t_final = 1e-2, 0.5
  final = {}
  for lam in (0.1, 0.5):
    steps = int(round(t_final / (lam * alpha)))
    r = amc_jax.correspondence(
        sine_loss, jnp.asarray(X0), sigma=lam * alpha * SQRT_2PI, learning_rate=alpha,
        n_chains=400, mc_steps=steps, n_records=5, data=data(), seed=0,
    )
    assert r.time[-1] == pytest.approx(t_final)
    assert r.delta[-1] > 3 * r.delta_floor[-1]  # a real difference, not ensemble noise
    final[lam] = float(r.delta[-1])
  assert final[0.1] < 0.5 * final[0.5], final


def test_correspondence_at_finite_temperature_follows_plain_gd():
  """T > 0: the mean of many chains follows optax.sgd(sigma^2 / 2T) (Eq. 5).

  y = beta |grad U| sigma <= 0.08 keeps the finite-sigma correction of the
  drift (see the linear-loss test) to a few per cent of a displacement that
  the ensemble resolves: Delta stays within the ensemble noise, whose
  expectation is delta_floor; with 2 params, P(Delta > 10 floor) ~ e^-10.
  """
  a = jnp.array([1.0, 4.0])
  loss = lambda x: 0.5 * jnp.sum(a * x**2)
  sigma, temperature = 0.1, 5.0
  r = amc_jax.correspondence(
      loss, jnp.array([1.0, 1.0]), sigma=sigma, temperature=temperature, n_chains=2000,
      mc_steps=1000, n_records=4, seed=2,
  )
  alpha = sigma**2 / (2 * temperature)
  assert r.learning_rate == pytest.approx(alpha)
  x = np.array([1.0, 1.0])
  for _ in range(1000):
    x = x - alpha * np.asarray(a) * x
  np.testing.assert_allclose(r.gd[-1], x, rtol=1e-4)
  assert np.linalg.norm(x - 1.0) > 0.5  # gradient descent went somewhere
  assert r.delta[-1] < 10 * r.delta_floor[-1]
  assert np.all(r.delta[1:] < 10 * r.delta_floor[1:])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mc_steps": 30, "n_records": 4}, "multiple of n_records"),
        ({"mc_steps": 40, "n_records": 8, "learning_rate": 1.0}, "whole number"),
        ({"mc_steps": 40, "n_records": 4, "n_chains": 0}, "n_chains"),
        ({"mc_steps": 40, "n_records": 4, "temperature": optax.constant_schedule(1.0)}, "fixed temperature"),
        ({"mc_steps": 40, "n_records": 4, "n_kept": -1}, "n_kept"),
    ],
)
def test_correspondence_rejects_bad_input(kwargs, match):
  loss = lambda x: jnp.sum(x**2)
  with pytest.raises((ValueError, TypeError), match=match):
    amc_jax.correspondence(loss, jnp.ones(2), sigma=0.1, **kwargs)
