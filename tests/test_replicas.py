"""Replica exchange, populations and population annealing.

Statistical checks run many independent copies of the whole method (nested
``vmap``), so their final states are independent samples: the error bar of a
mean is sqrt(exact variance / number of copies), exactly, with no
autocorrelation to estimate. Every rule (the swap, the reweighting, the
resampling) is also replaced, through ``monkeypatch``, by a deliberately
wrong variant written here, and the same check must then fail: the checks
have power. Seeds are fixed and were not searched for.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax
from amc_jax._src import replicas

N_SIGMA = 5.0


def run_copies(tx, states, params, loss, n_steps):
  """``n_steps`` of ``tx`` for each of several independent copies (axis 0)."""

  @jax.jit
  def go(params, states):
    def body(carry, _):
      p, s = carry
      u, s = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=loss))(p, s)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(body, (params, states), None, length=n_steps)[0]

  return go(params, states)


def stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


# --------------------------------------------------------------------------
# Replica exchange on a double well whose barrier the cold replica cannot
# cross on its own.

H, A = 2.0, 0.1  # barrier height (at x = 0) and tilt
LADDER = (0.1, 0.18, 0.32, 0.57, 1.0, 1.8)


def well(x):
  return H * (x**2 - 1.0) ** 2 + A * x


def well_loss(p):
  return well(p[0])


def exact_well(t):
  """Mean and variance of 1[x > 0] and x under exp(-U/T), by quadrature."""
  x = np.linspace(-3.0, 3.0, 600_001)
  w = np.exp(-(H * (x**2 - 1.0) ** 2 + A * x) / t)
  w /= w.sum()
  out = {}
  for name, f in {"right": (x > 0).astype(np.float64), "x": x}.items():
    mean = float(np.sum(w * f))
    out[name] = (mean, float(np.sum(w * f**2)) - mean**2)
  return out


def replica_exchange_samples(n_copies=400, n_steps=1500, seed=0):
  tx = replicas.replica_exchange(amc_jax.metropolis(0.3), LADDER, seed=seed)
  r = len(LADDER)
  start = jnp.full((r, 1), -1.0)  # every replica in the left (deeper) well
  states = stack([
      replicas.replica_exchange(amc_jax.metropolis(0.3), LADDER, seed=seed * 10_000 + i).init(start)
      for i in range(n_copies)
  ])
  params = jnp.broadcast_to(start, (n_copies, r, 1))
  final, states = run_copies(tx, states, params, well_loss, n_steps)
  # x of the replica at each temperature, per copy: [copies, temperatures]
  at = jnp.argsort(states.temperature_index, axis=1)
  x = jnp.take_along_axis(final[:, :, 0], at, axis=1)
  return np.asarray(x, np.float64), states


def z_per_temperature(x):
  zs = []
  for i, t in enumerate(LADDER):
    exact = exact_well(t)
    xi = x[:, i]
    for name, values in {"right": (xi > 0).astype(np.float64), "x": xi}.items():
      mean, var = exact[name]
      zs.append((t, name, (values.mean() - mean) / math.sqrt(var / values.size)))
  return zs


def test_swap_pass_against_its_closed_form():
  """One even pass on 4 replicas: the swap frequency of each pair is
  min(1, exp((1/T_i - 1/T_j)(U_a - U_b))) within 5 binomial SE, odd pairs
  are left alone, and an accepted swap exchanges exactly the two indices."""
  temps = jnp.asarray([0.5, 1.0, 2.0, 4.0])
  index = jnp.asarray([2, 0, 3, 1], jnp.int32)  # replica r at temps[index[r]]
  losses = jnp.asarray([1.0, 2.0, 0.5, 3.0])  # U of replicas 0..3
  n = 100_000
  keys = jax.random.split(jax.random.key(0), n)
  new, attempted, accepted = jax.jit(jax.vmap(replicas.swap_pass, in_axes=(0, None, None, None, None)))(
      keys, losses, index, temps, jnp.int32(0)
  )
  # Pair (T0, T1): replicas 1 (U=2) and 3 (U=3); pair (T2, T3): replicas 0 (U=1) and 2 (U=0.5).
  p01 = min(1.0, math.exp((1 / 0.5 - 1 / 1.0) * (2.0 - 3.0)))
  p23 = min(1.0, math.exp((1 / 2.0 - 1 / 4.0) * (1.0 - 0.5)))
  for pair, p in ((0, p01), (2, p23)):
    freq = float(np.mean(accepted[:, pair]))
    assert abs(freq - p) < N_SIGMA * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12, (pair, freq, p)
  assert not np.any(np.asarray(attempted[:, 1])) and np.all(np.asarray(attempted[:, 0]))
  swapped = np.asarray(accepted[:, 0])
  np.testing.assert_array_equal(np.asarray(new[swapped][:, [1, 3]]), np.tile([1, 0], (swapped.sum(), 1)))
  np.testing.assert_array_equal(np.asarray(new[~swapped][:, [1, 3]]), np.tile([0, 1], ((~swapped).sum(), 1)))


def test_replica_exchange_samples_every_temperature_and_crosses_the_barrier():
  """400 independent replica-exchange runs from the left well: at every
  temperature P(x > 0) and E[x] match exp(-U/T) within 5 SE, at the coldest
  (barrier/T = 20) too, while a lone chain at that temperature never leaves
  the left well in the same budget."""
  x, states = replica_exchange_samples()
  bad = [z for z in z_per_temperature(x) if abs(z[2]) >= N_SIGMA]
  assert not bad, bad
  assert exact_well(LADDER[0])["right"][0] > 0.05  # a real occupancy to find
  acc = np.asarray(states.swap_acceptance).mean(0)
  assert np.all((acc > 0.05) & (acc < 1.0)), acc
  # The lone cold chain, same proposal and steps.
  lone = amc_jax.metropolis(0.3, LADDER[0])
  start = jnp.full((400, 1), -1.0)
  final, _ = run_copies(lone, amc_jax.init_ensemble(lone, start, jax.random.key(1)), start, well_loss, 1500)
  assert float(jnp.mean(final[:, 0] > 0)) == 0.0


def test_a_wrong_swap_rule_fails_the_same_check(monkeypatch):
  """Swaps accepted with the reciprocal probability (sign flipped) send low
  losses to hot replicas: the per-temperature check fails."""
  right = replicas.swap_pass

  def flipped(key, losses, index, temps, parity):
    return right(key, -losses, index, temps, parity)

  monkeypatch.setattr(replicas, "swap_pass", flipped)
  x, _ = replica_exchange_samples(n_copies=200, n_steps=800)
  assert max(abs(z[2]) for z in z_per_temperature(x)) > 2 * N_SIGMA


def test_replica_exchange_checks_and_coldest_replica():
  with pytest.raises(ValueError, match="strictly increasing"):
    amc_jax.replica_exchange(amc_jax.metropolis(0.1), (1.0, 0.5))
  with pytest.raises(ValueError, match="at least 2"):
    amc_jax.replica_exchange(amc_jax.metropolis(0.1), (1.0,))
  tx = amc_jax.replica_exchange(amc_jax.metropolis(0.1), (0.0, 1.0, 2.0))
  with pytest.raises(ValueError, match="3 temperatures but the params' leading"):
    tx.init(jnp.zeros((2, 4)))
  params = jnp.arange(6.0).reshape(3, 2)
  state = tx.init(params)._replace(temperature_index=jnp.asarray([2, 0, 1], jnp.int32))
  np.testing.assert_array_equal(amc_jax.coldest_replica(params, state), params[1])


def test_replica_exchange_with_fit_and_amc():
  """fit needs no flag: the history has a replica axis, and the coldest
  replica of aMC with a zero-temperature rung reaches the minimum."""
  x = jnp.linspace(-1.0, 1.0, 64)[:, None]
  y = jnp.tanh(2.0 * x)
  loss = lambda p, b: jnp.mean((jnp.tanh(b[0] * p[0]) * p[1] - b[1]) ** 2)
  tx = amc_jax.replica_exchange(amc_jax.amc(0.1, epsilon=0.1, n_reset=20), (0.0, 1e-4, 1e-3, 1e-2))
  result = amc_jax.fit(tx, jnp.zeros((4, 2)), loss, (x, y), steps=400, progress=False)
  assert result.history["loss"].shape[1:] == (4,)
  best = amc_jax.coldest_replica(result.params, result.opt_state)
  assert float(loss(best, (x, y))) < 1e-3
  # The cached loss of every replica is the loss of its params (to the
  # rounding of another compiled program).
  cached = amc_jax.monte_carlo_state(result.opt_state).loss
  np.testing.assert_allclose(cached, jax.vmap(lambda p: loss(p, (x, y)))(result.params), rtol=1e-5)


# --------------------------------------------------------------------------
# Population annealing: ln Z against exact values.


def gaussian_energy(p):
  return 0.5 * jnp.sum(p**2)


def pa_log_z(tx_of_seed, starts, loss, n_steps, n_runs=12):
  states = stack([tx_of_seed(i).init(starts[i]) for i in range(n_runs)])
  final, states = run_copies(tx_of_seed(0), states, starts[:n_runs], loss, n_steps)
  return np.asarray(states.log_z, np.float64), final, states


GAUSS_LADDER = tuple(np.geomspace(4.0, 0.25, 9).tolist())


def gaussian_pa(n_runs=12, m=1000):
  d = 2
  tx_of_seed = lambda s: amc_jax.population_annealing(
      amc_jax.metropolis(0.5), GAUSS_LADDER, steps_per_temperature=10, seed=s
  )
  starts = 2.0 * jax.random.normal(jax.random.key(2), (n_runs, m, d))  # exact at T = 4
  log_z, _, _ = pa_log_z(tx_of_seed, starts, gaussian_energy, 10 * len(GAUSS_LADDER), n_runs)
  exact = 0.5 * d * math.log(GAUSS_LADDER[-1] / GAUSS_LADDER[0])
  return log_z, exact


def test_population_annealing_log_z_of_a_gaussian():
  """ln Z(0.25) - ln Z(4) = (d/2) ln(1/16) for U = |x|^2/2 in d = 2: the mean
  of 12 independent runs of 1000 replicas within 5 SE (from their spread)."""
  log_z, exact = gaussian_pa()
  se = log_z.std(ddof=1) / math.sqrt(log_z.size)
  assert abs(log_z.mean() - exact) < N_SIGMA * se + 0.01, (log_z, exact, se)
  assert se < 0.05  # the estimate is informative


def test_wrong_reweighting_or_resampling_fails_the_log_z_check(monkeypatch):
  """Weights with the wrong sign of the temperature step, or a resampling
  that copies only the best replica, miss ln Z by far more than 5 SE."""
  right_weights = replicas.annealing_weights

  def flipped(losses, t, t_next):
    return right_weights(losses, t_next, t)

  monkeypatch.setattr(replicas, "annealing_weights", flipped)
  log_z, exact = gaussian_pa(n_runs=6)
  se = log_z.std(ddof=1) / math.sqrt(log_z.size)
  assert abs(log_z.mean() - exact) > 2 * N_SIGMA * se + 0.01
  monkeypatch.setattr(replicas, "annealing_weights", right_weights)

  def best_only(key, log_w):
    return jnp.full(log_w.shape, jnp.argmax(log_w), jnp.int32)

  monkeypatch.setattr(replicas, "systematic_resample", best_only)
  log_z, exact = gaussian_pa(n_runs=6)
  se = log_z.std(ddof=1) / math.sqrt(log_z.size)
  assert abs(log_z.mean() - exact) > 2 * N_SIGMA * se + 0.01


def ising_energy(s, j=1.0, h=0.3):
  return -j * jnp.sum(s[:-1] * s[1:]) - h * jnp.sum(s)


def test_population_annealing_log_z_of_an_enumerable_spin_chain():
  """Six +-1 spins (discrete moves): ln Z(0.5) - ln Z(5) by enumeration of
  the 64 states; the initial population drawn exactly at T = 5."""
  n, m, n_runs = 6, 1000, 12
  states_all = np.array(np.meshgrid(*[[-1.0, 1.0]] * n, indexing="ij")).reshape(n, -1).T
  energies = np.array([float(ising_energy(jnp.asarray(s))) for s in states_all])
  ladder = tuple(np.geomspace(5.0, 0.5, 10).tolist())
  log_z_of = lambda t: float(np.log(np.sum(np.exp(-energies / t))))
  exact = log_z_of(ladder[-1]) - log_z_of(ladder[0])
  p0 = np.exp(-energies / ladder[0])
  rng = np.random.default_rng(0)
  starts = jnp.asarray(states_all[rng.choice(64, size=(n_runs, m), p=p0 / p0.sum())], jnp.float32)
  tx_of_seed = lambda s: amc_jax.population_annealing(
      amc_jax.metropolis(1.0, proposal=amc_jax.proposals.discrete((-1.0, 1.0), 1.0 / n)),
      ladder, steps_per_temperature=10, seed=s,
  )
  log_z, final, _ = pa_log_z(tx_of_seed, starts, ising_energy, 10 * len(ladder), n_runs)
  se = log_z.std(ddof=1) / math.sqrt(n_runs)
  assert abs(log_z.mean() - exact) < N_SIGMA * se + 0.01, (log_z.mean(), exact, se)
  assert set(np.unique(np.asarray(final)).tolist()) <= {-1.0, 1.0}


def test_systematic_resampling_copies_floor_or_ceil_of_m_w():
  m = 64
  log_w = jax.random.normal(jax.random.key(3), (m,)) * 2.0
  w = np.asarray(jax.nn.softmax(log_w), np.float64)
  for i in range(50):
    source = np.asarray(replicas.systematic_resample(jax.random.key(100 + i), log_w))
    assert source.shape == (m,) and np.all(np.diff(source) >= 0)
    counts = np.bincount(source, minlength=m)
    assert np.all((counts >= np.floor(m * w - 1e-6)) & (counts <= np.ceil(m * w + 1e-6))), i


def test_resampling_copies_whole_states_with_new_keys():
  """At a change of temperature every slot holds its source's state (params
  within one rounding, mu, sigma, counters), its cached loss is the loss of
  its params, the population keeps its size, and copies get distinct keys."""
  m = 16
  inner = amc_jax.amc(0.3, epsilon=0.2, n_reset=3)
  tx = amc_jax.population_annealing(inner, (2.0, 0.2), steps_per_temperature=5)
  params = jax.random.normal(jax.random.key(4), (m, 3))
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=gaussian_energy))
  for _ in range(4):
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
  # The 5th step changes the temperature: compare with a plain vmapped step
  # at the first temperature.
  plain = jax.vmap(
      lambda p, s: inner.update(None, s, p, value_fn=gaussian_energy, temperature=2.0)
  )
  u0, s0 = plain(params, state.inner)
  stepped = optax.apply_updates(params, u0)
  u, new = step(params, state)
  after = optax.apply_updates(params, u)
  source = np.asarray(new.source)
  assert new.stage == 1 and source.shape == (m,) and len(set(source.tolist())) < m
  np.testing.assert_allclose(after, stepped[source], rtol=2e-7, atol=1e-7)
  copied_from = lambda field: jax.tree_util.tree_map(lambda x: x[source], getattr(s0, field))
  for field in ("n_accept", "n_reject", "count"):
    chex.assert_trees_all_equal(getattr(new.inner, field), copied_from(field))
  # mu and sigma to the rounding of another compiled program (the reference
  # step above is a separate jit, where XLA may fuse mu + sigma z differently).
  for field in ("mu", "sigma"):
    chex.assert_trees_all_close(getattr(new.inner, field), copied_from(field), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(new.inner.loss, jax.vmap(gaussian_energy)(after), rtol=1e-6)
  keys = [tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in new.inner.key]
  assert len(set(keys)) == m


# --------------------------------------------------------------------------
# Populations that clone their best.


def test_population_clones_the_best_whole_with_distinct_keys():
  m, every = 8, 5
  inner = amc_jax.amc(0.3, epsilon=0.2, n_reset=2)
  tx = amc_jax.population(inner, every=every, fraction=0.25)
  params = jax.random.normal(jax.random.key(5), (m, 3))
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=gaussian_energy))
  for _ in range(every - 1):
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
  plain = jax.vmap(lambda p, s: inner.update(None, s, p, value_fn=gaussian_energy))
  u0, s0 = plain(params, state.inner)
  stepped = optax.apply_updates(params, u0)
  losses = np.asarray(s0.loss)
  u, new = step(params, state)
  after = optax.apply_updates(params, u)
  source = np.asarray(new.source)
  order = np.argsort(losses, kind="stable")
  expect = np.arange(m)
  expect[order[::-1][:2]] = order[:2]
  np.testing.assert_array_equal(source, expect)
  assert int(new.n_cloned) == 2
  np.testing.assert_allclose(after, stepped[source], rtol=2e-7, atol=1e-7)
  kept = source == np.arange(m)
  np.testing.assert_array_equal(np.asarray(after)[kept], np.asarray(stepped)[kept])
  copied_from = lambda field: jax.tree_util.tree_map(lambda x: x[source], getattr(s0, field))
  for field in ("n_accept", "n_reject", "count"):
    chex.assert_trees_all_equal(getattr(new.inner, field), copied_from(field))
  # mu and sigma to the rounding of another compiled program (the reference
  # step above is a separate jit, where XLA may fuse mu + sigma z differently).
  for field in ("mu", "sigma"):
    chex.assert_trees_all_close(getattr(new.inner, field), copied_from(field), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(new.inner.loss, jax.vmap(gaussian_energy)(after), rtol=1e-6)
  keys = [tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in new.inner.key]
  assert len(set(keys)) == m  # clones do not repeat their originals' draws


def test_population_trains_faster_than_independent_chains():
  """On a rugged 1-D loss, cloning the best finds a lower loss than the same
  chains without cloning (same keys, same budget), over 8 seeds."""
  loss = lambda p: jnp.sum(p**2 + 0.5 * (1 - jnp.cos(12 * p)))
  wins = 0
  # One transformation each, so that fit compiles once for all seeds.
  base = amc_jax.amc(0.05, epsilon=0.1, n_reset=50)
  cloning = amc_jax.population(base, every=25)
  for seed in range(8):
    params = 2.0 + jax.random.normal(jax.random.key(seed), (16, 4))
    with_cloning = amc_jax.fit(cloning, params, loss, steps=400, progress=False)
    alone = amc_jax.fit(base, params, loss, steps=400, n_chains=16, progress=False)
    wins += float(with_cloning.history["loss"][-1].min()) <= float(alone.history["loss"][-1].min())
  assert wins >= 6, wins


def test_population_checks():
  with pytest.raises(ValueError, match="fraction"):
    amc_jax.population(amc_jax.amc(0.1), every=5, fraction=0.75)
  with pytest.raises(ValueError, match="clones no chain"):
    amc_jax.population(amc_jax.amc(0.1), every=5, fraction=0.25).init(jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match="strictly|> 0"):
    amc_jax.population_annealing(amc_jax.metropolis(0.1), (1.0, 0.0), steps_per_temperature=3)
  with pytest.raises(TypeError, match="value_fn"):
    tx = amc_jax.population(amc_jax.amc(0.1), every=5, fraction=0.5)
    tx.update(None, tx.init(jnp.zeros((2, 2))), jnp.zeros((2, 2)))


def test_replica_states_carry_the_marker_that_fit_reads():
  """The three replica methods' states are marked as coupled; an ensemble's
  state is not, though its AMCState count has a chain axis as theirs do (the
  rank of count, which fit read before, cannot tell them apart)."""
  from amc_jax._src import replicas as replicas_lib

  params = jnp.zeros((4, 2))
  inner = amc_jax.metropolis(0.1)
  coupled = [
      amc_jax.replica_exchange(inner, (0.1, 0.2, 0.4, 0.8)).init(params),
      amc_jax.population(inner, every=5).init(params),
      amc_jax.population_annealing(inner, (1.0, 0.5), steps_per_temperature=5).init(params),
  ]
  ensemble = amc_jax.init_ensemble(inner, params, jax.random.key(0))
  for state in coupled:
    assert replicas_lib.is_coupled_state(state)
    assert replicas_lib.is_coupled_state((state, optax.EmptyState()))  # wrapped too
    assert jnp.ndim(amc_jax.monte_carlo_state(state).count) == 1
  assert not replicas_lib.is_coupled_state(ensemble)
  assert jnp.ndim(amc_jax.monte_carlo_state(ensemble).count) == 1  # the old signal
