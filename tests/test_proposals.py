"""Tests of the trial moves of :mod:`amc_jax.proposals`.

Three kinds of test:

* samplers: at T > 0, :func:`amc_jax.metropolis` with each move must sample
  exp(-U/T) exactly (the move is symmetric, or says by how much it is not
  through ``log_ratio``). Every such test runs M independent chains in one
  jitted ``lax.scan`` and uses their FINAL states only, so the effective
  sample size is M (times the number of coordinates, when the target
  factorises) exactly, with no autocorrelation estimate in the error bar.
  The burn-in is checked instead: the chains start away from the target, and
  the integrated autocorrelation time tau of the energy, measured (with
  test_boltzmann's estimator) on the second half of the run of 64 of the
  chains, must be at most 1/20 of the run: if the start is forgotten like
  exp(-n / tau), what is left of it (~2e-9) is far below the statistical
  resolution (1 / sqrt(M) ~ 1e-2);
* power: every statistical check is also run, unchanged, on a deliberately
  wrong move written below (an asymmetric move with log_ratio = 0, a
  state-dependent selection, a dropped Hastings term), and must fail on it;
* structure: grids are kept bit for bit, fractions and leaf choices have the
  stated probabilities (binomial error bars), singular values are kept,
  errors are raised with the culprit named, and ``amc(epsilon=)``,
  ``proposal=gaussian()`` and ``tx.update(temperature=)`` agree bit for bit.

Tolerances: 5 standard errors (two-sided normal tail 5.7e-7), or for
histograms a chi-square statistic whose Wilson-Hilferty normal score is below
5 (cells with fewer than 5 expected counts pooled). The file makes about 40
such checks, so a false failure has probability ~1e-5. Seeds are fixed and
were not searched for. The measured statistics quoted in the docstrings are
printed by ``pytest -s``.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import amc_jax
from amc_jax import proposals
from test_boltzmann import integrated_autocorr_time

N_SIGMA = 5.0
SEED = 0
N_TRACED = 64  # chains whose energy is recorded for the burn-in check
BURN_IN_TAUS = 20.0


# --------------------------------------------------------------------------
# Statistics.


def chi2_score(observed, expected, min_expected=5.0):
  """Pearson's chi-square of a histogram, as a normal score.

  Cells expected to hold fewer than ``min_expected`` counts are pooled into
  one, so that the chi-square law with (cells - 1) degrees of freedom holds.
  The statistic is turned into an approximately standard normal score by the
  Wilson-Hilferty cube root, ``((X/k)^(1/3) - (1 - 2/(9k))) / sqrt(2/(9k))``.
  At the exact 5-sigma quantile of the chi-square law it gives 4.79 for
  k = 3 and 4.93 to 4.97 for k = 17 to 55, so "score < 5" errs on the side
  of passing a right move by at most 0.2 sigma.

  Returns:
    (score, chi2, dof).
  """
  observed = np.asarray(observed, np.float64).ravel()
  expected = np.asarray(expected, np.float64).ravel()
  np.testing.assert_allclose(observed.sum(), expected.sum(), rtol=1e-9)
  small = expected < min_expected
  if small.any():
    observed = np.append(observed[~small], observed[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
  chi2 = float(np.sum((observed - expected) ** 2 / expected))
  dof = observed.size - 1
  h = 2.0 / (9.0 * dof)
  return ((chi2 / dof) ** (1.0 / 3.0) - (1.0 - h)) / math.sqrt(h), chi2, dof


def mean_z(samples, expected_mean):
  """z-score of the mean of iid samples (standard error from their spread)."""
  samples = np.asarray(samples, np.float64).ravel()
  return (samples.mean() - expected_mean) / (samples.std() / math.sqrt(samples.size))


def fraction_z(hits, n, p):
  """z-score of a binomial frequency ``hits / n`` against probability p."""
  return (hits / n - p) / math.sqrt(p * (1.0 - p) / n)


def energy_tau(trace):
  """Integrated autocorrelation time of the energy, in steps.

  ``trace`` is (steps, chains) of energies; tau is measured on its second
  half, where the chains are near stationarity (inf if no window is found).
  """
  trace = np.asarray(trace, np.float64)
  try:
    return integrated_autocorr_time(trace[trace.shape[0] // 2 :])[0]
  except AssertionError:
    return math.inf


# --------------------------------------------------------------------------
# Running chains.


def run_chains(tx, energy, x0, key, n_steps):
  """M independent chains of ``tx`` on ``energy`` for ``n_steps``, one program.

  ``x0`` carries the chain axis first on every leaf. Returns the final params,
  the final (vmapped) state, and the energy of the first ``N_TRACED`` chains
  at every step, shape (n_steps, N_TRACED).
  """

  @jax.jit
  def go(x0, key):
    state = amc_jax.init_ensemble(tx, x0, key)
    step = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=energy))

    def body(carry, _):
      x, state = carry
      updates, state = step(x, state)
      x = optax.apply_updates(x, updates)
      head = jax.tree_util.tree_map(lambda a: a[:N_TRACED], x)
      return (x, state), jax.vmap(energy)(head)

    (x, state), trace = lax.scan(body, (x0, state), None, length=n_steps)
    return x, state, trace

  x, state, trace = go(x0, key)
  return jax.tree_util.tree_map(np.asarray, x), state, np.asarray(trace)


def _no_state(params):
  del params
  return ()


def _keep_state(state, move, accepted, reset):
  del move, accepted, reset
  return state


def drop_log_ratio(move):
  """``move`` with its Hastings term replaced by 0: a wrong rule for any
  asymmetric move."""

  def propose(key, state, params, sigma, scales):
    return move.propose(key, state, params, sigma, scales)[0], 0.0

  return proposals.Proposal(move.init, propose, move.update)


# --------------------------------------------------------------------------
# 1. discrete: the Boltzmann distribution over a grid, state by state.


def discrete_variant(levels, fraction, rule):
  """A move on a grid with one deliberate error, and ``log_ratio = 0``.

  One flat leaf. Entries are selected like :func:`proposals.discrete`
  (each with probability ``fraction``, at least one). Then:

  * ``"sticky"`` (two levels): a selected entry flips, except that one at the
    lowest level flips only half the time: q(lo -> hi) = q(hi -> lo) / 2;
  * ``"reflect"`` (neighbour steps): a step off the grid reflects inward
    instead of staying put: q(0 -> 1) = 1 but q(1 -> 0) = 1/2;
  * ``"collide"`` (any-level jumps): the new level is uniform over ALL
    levels, and drawing the current one moves up one (cyclically), so
    q(k -> k+1) = 2/L but q(k+1 -> k) = 1/L.
  """
  grid = np.asarray(levels, np.float32)
  n_levels = grid.size

  def propose(key, state, x, sigma, scales):
    del state, sigma, scales
    mask_key, jump_key, coin_key = jax.random.split(key, 3)
    u = jax.random.uniform(mask_key, x.shape)
    mask = (u < fraction) | (u == jnp.min(u))
    lv = jnp.asarray(grid)
    index = jnp.argmin(jnp.abs(x[..., None] - lv[None, :]), axis=-1)
    if rule == "sticky":
      target = n_levels - 1 - index
      mask = mask & ((index > 0) | jax.random.bernoulli(coin_key, 0.5, x.shape))
    elif rule == "reflect":
      step = 2 * jax.random.bernoulli(jump_key, 0.5, x.shape).astype(jnp.int32) - 1
      target = index + step
      target = jnp.where(target < 0, 1, jnp.where(target > n_levels - 1, n_levels - 2, target))
    elif rule == "collide":
      draw = jax.random.randint(jump_key, x.shape, 0, n_levels)
      target = jnp.where(draw == index, (index + 1) % n_levels, draw)
    else:
      raise ValueError(rule)
    return jnp.where(mask, lv[target] - x, jnp.zeros_like(x)), 0.0

  return proposals.Proposal(_no_state, propose, _keep_state)


# A ring of 6 Ising spins with mixed couplings and fields; at T = 1.5 the
# Boltzmann probabilities of the 64 states span three decades.
ISING_J = (1.0, -0.75, 0.5, 1.0, -0.5, 0.75)  # J_i couples s_i and s_{i+1}
ISING_H = (0.5, -0.25, 0.0, 0.25, -0.5, 0.75)
ISING_T = 1.5
# Three entries on 4 levels: a confining quadratic, fields and couplings; at
# T = 1 the probabilities of the 64 states span 2.8 decades.
QUANT_LEVELS = (-1.5, -0.5, 0.5, 1.5)
QUANT_H = (0.5, -0.25, 0.75)
QUANT_T = 1.0
M_GRID = 4096
STEPS_GRID = 500


def ising_energy(s):
  j = jnp.asarray(ISING_J, s.dtype)
  h = jnp.asarray(ISING_H, s.dtype)
  return -jnp.sum(j * s * jnp.roll(s, -1)) - jnp.sum(h * s)


def quant_energy(x):
  h = jnp.asarray(QUANT_H, x.dtype)
  pairs = x[0] * x[1] + x[1] * x[2] + x[0] * x[2]
  return jnp.sum(0.5 * x**2 - h * x) - 0.25 * pairs


def grid_histogram(move, energy, temperature, levels, n_entries, case):
  """Runs M_GRID chains of metropolis(move) at ``temperature`` on a grid target.

  Chains start uniformly on the grid. Returns the counts of the final states
  (every one of the L^n states, in lexicographic level order), the exact
  Boltzmann probabilities of the same states, and the measured tau.
  """
  levels = np.asarray(levels, np.float32)
  states = np.array(list(itertools.product(levels, repeat=n_entries)), np.float32)
  u = np.asarray(jax.vmap(energy)(jnp.asarray(states)), np.float64)
  p = np.exp(-(u - u.min()) / temperature)
  p /= p.sum()

  key = jax.random.fold_in(jax.random.key(SEED), case)
  start_key, chain_key = jax.random.split(key)
  x0 = jnp.asarray(levels)[jax.random.randint(start_key, (M_GRID, n_entries), 0, levels.size)]
  tx = amc_jax.metropolis(1.0, temperature, proposal=move)
  x, _, trace = run_chains(tx, energy, x0, chain_key, STEPS_GRID)
  assert np.isin(x, levels).all()
  digits = np.searchsorted(levels, x)
  index = digits @ (levels.size ** np.arange(n_entries - 1, -1, -1))
  counts = np.bincount(index, minlength=levels.size**n_entries)
  return counts, p, energy_tau(trace)


def _grid_check(counts, p):
  score, chi2, dof = chi2_score(counts, M_GRID * p)
  return score, f"chi2={chi2:.1f} dof={dof} score={score:+.2f}"


def test_discrete_binary_samples_the_ising_distribution():
  """Binary flips at T = 1.5 visit the 64 states of a 6-spin Ising ring with
  their exact Boltzmann probabilities.

  4096 chains, 500 steps, fraction 1/6 (one spin per step on average). The
  histogram of the final states is compared with exp(-U/T)/Z, enumerated
  exactly: Pearson chi-square (63 dof before pooling; measured score -1.2),
  normal score < 5. tau of the energy ~16 steps, so 500 steps are >= 20 tau.
  """
  move = proposals.discrete((-1.0, 1.0), 1.0 / 6)
  counts, p, tau = grid_histogram(move, ising_energy, ISING_T, (-1.0, 1.0), 6, case=1)
  score, msg = _grid_check(counts, p)
  print(f"\nbinary: {msg} tau={tau:.2f} p in [{p.min():.1e}, {p.max():.2f}]")
  assert p.max() / p.min() > 1000  # far from uniform
  assert STEPS_GRID >= BURN_IN_TAUS * tau
  assert score < N_SIGMA, msg


def test_discrete_binary_check_catches_a_state_dependent_flip():
  """The same histogram check fails for a flip that favours one level.

  The 'sticky' variant (see :func:`discrete_variant`) flips an entry at -1
  only half as often as one at +1, with log_ratio = 0; its chains sample
  roughly exp(-U/T) 2^(#spins at -1), and the chi-square score is far
  above 5 (measured: 51).
  """
  move = discrete_variant((-1.0, 1.0), 1.0 / 6, "sticky")
  counts, p, _ = grid_histogram(move, ising_energy, ISING_T, (-1.0, 1.0), 6, case=1)
  score, msg = _grid_check(counts, p)
  print(f"\nsticky binary: {msg}")
  assert score >= N_SIGMA, msg


@pytest.mark.parametrize("step", ["neighbour", "any"])
def test_discrete_levels_sample_the_boltzmann_distribution(step):
  """Four levels, three coupled entries: the 64 states at their exact
  probabilities, for neighbour steps and for jumps to any level.

  Same construction and tolerance as the binary test (4096 chains, 500
  steps, fraction 1/3, chi-square score < 5; measured +0.9 and -1.0). tau
  of the energy ~10 steps (neighbour) and ~5 (any).
  """
  move = proposals.discrete(QUANT_LEVELS, 1.0 / 3, step=step)
  counts, p, tau = grid_histogram(move, quant_energy, QUANT_T, QUANT_LEVELS, 3, case=2)
  score, msg = _grid_check(counts, p)
  print(f"\n{step}: {msg} tau={tau:.2f} p in [{p.min():.1e}, {p.max():.2f}]")
  assert p.max() / p.min() > 100
  assert STEPS_GRID >= BURN_IN_TAUS * tau
  assert score < N_SIGMA, msg


@pytest.mark.parametrize("rule", ["reflect", "collide"])
def test_discrete_levels_check_catches_an_asymmetric_jump(rule):
  """The same check fails for the asymmetric jump rules of
  :func:`discrete_variant` with log_ratio = 0: reflecting at the edge of the
  grid (the neighbour rule done wrong) and a collision rule for any-level
  jumps that prefers the next level up (measured scores 27 and 21)."""
  move = discrete_variant(QUANT_LEVELS, 1.0 / 3, rule)
  counts, p, _ = grid_histogram(move, quant_energy, QUANT_T, QUANT_LEVELS, 3, case=2)
  score, msg = _grid_check(counts, p)
  print(f"\n{rule}: {msg}")
  assert score >= N_SIGMA, msg


# --------------------------------------------------------------------------
# 2. sparse and layerwise: the variance test of test_boltzmann.py.

T_GAUSS = 0.5
M_GAUSS = 4096
STEPS_GAUSS = 600
# d = 6 coordinates in three leaves of two each.
GAUSS_SHAPES = {"a": (2,), "b": (1, 2), "c": (2,)}


def quadratic(params):
  return 0.5 * sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(params))


def sparse_state_dependent(fraction):
  """:func:`proposals.sparse` done wrong: an entry with |x_i| > 0.7 joins
  the move with probability 2f instead of f (log_ratio = 0).

  A selection that depends on the state is not symmetric: the chain samples
  about exp(-U/T) / P(selected), which thins the tails, E[x^2] ~ 0.7 T.
  """
  inner = proposals.gaussian()

  def propose(key, state, params, sigma, scales):
    move_key, mask_key = jax.random.split(key)
    move, _ = inner.propose(move_key, state, params, sigma, scales)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    u = jax.random.uniform(mask_key, (sum(x.size for x in leaves),))
    x = jnp.concatenate([l.ravel() for l in leaves])
    mask = (u < jnp.where(jnp.abs(x) > 0.7, 2.0 * fraction, fraction)) | (u == jnp.min(u))
    flat = jnp.concatenate([m.ravel() for m in jax.tree_util.tree_leaves(move)])
    flat = jnp.where(mask, flat, jnp.zeros_like(flat))
    out, offset = [], 0
    for l in leaves:
      out.append(flat[offset : offset + l.size].reshape(l.shape))
      offset += l.size
    return jax.tree_util.tree_unflatten(treedef, out), 0.0

  return proposals.Proposal(inner.init, propose, inner.update)


def layerwise_state_dependent():
  """:func:`proposals.layerwise` done wrong: half the time the leaf with the
  largest squared norm moves, else a uniform one (log_ratio = 0)."""
  inner = proposals.gaussian()

  def propose(key, state, params, sigma, scales):
    move_key, coin_key, leaf_key = jax.random.split(key, 3)
    move, _ = inner.propose(move_key, state, params, sigma, scales)
    leaves, treedef = jax.tree_util.tree_flatten(move)
    norms = jnp.stack([jnp.sum(x**2) for x in jax.tree_util.tree_leaves(params)])
    chosen = jnp.where(
        jax.random.bernoulli(coin_key),
        jnp.argmax(norms),
        jax.random.randint(leaf_key, (), 0, len(leaves)),
    )
    leaves = [jnp.where(chosen == i, m, jnp.zeros_like(m)) for i, m in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves), 0.0

  return proposals.Proposal(inner.init, propose, inner.update)


# Steps sized for ~2 moving coordinates (sparse, f = 1/3 of 6; layerwise,
# one leaf of 2): 2.4 sqrt(T / 2) = 1.2 (Gelman, Roberts and Gilks 1996).
GAUSS_MOVES = {
    "sparse": lambda: proposals.sparse(1.0 / 3),
    "layerwise": proposals.layerwise,
    "sparse_state_dependent": lambda: sparse_state_dependent(1.0 / 3),
    "layerwise_state_dependent": layerwise_state_dependent,
}
SIGMA_GAUSS = 1.2


def gaussian_moments(name):
  """Final states of M_GAUSS chains on U = |x|^2/2 at T_GAUSS.

  Chains start from N(0, 1) per coordinate, twice the target variance. At
  stationarity the M * d = 24576 coordinates of the final states are iid
  N(0, T), so the means of x_i^2 and x_i have standard errors
  std / sqrt(24576) exactly: 0.9% of T for E[x^2].

  Returns (z of E[x^2] against T, z of E[x] against 0, E[x^2] / T, tau).
  """
  make = GAUSS_MOVES[name]
  key = jax.random.fold_in(jax.random.key(SEED), 3)
  start_key, chain_key = jax.random.split(key)
  keys = jax.random.split(start_key, len(GAUSS_SHAPES))
  x0 = {
      k: jax.random.normal(sk, (M_GAUSS,) + shape)
      for sk, (k, shape) in zip(keys, GAUSS_SHAPES.items())
  }
  tx = amc_jax.metropolis(SIGMA_GAUSS, T_GAUSS, proposal=make())
  x, _, trace = run_chains(tx, quadratic, x0, chain_key, STEPS_GAUSS)
  flat = np.concatenate([v.reshape(M_GAUSS, -1) for v in jax.tree_util.tree_leaves(x)], axis=1)
  z2 = mean_z(flat**2, T_GAUSS)
  z1 = mean_z(flat, 0.0)
  return z2, z1, float(np.mean(flat**2)) / T_GAUSS, energy_tau(trace)


@pytest.mark.parametrize("name", ["sparse", "layerwise"])
def test_sparse_and_layerwise_sample_the_boltzmann_distribution(name):
  """E[x_i^2] = T and E[x_i] = 0 for U = |x|^2/2 in 6 dimensions (three
  leaves) at T = 0.5, with the default Gaussian base move.

  4096 chains, 600 steps, final states: 24576 iid coordinates, both means
  within 5 standard errors (measured: E[x^2]/T = 0.990 and 0.999, |z| <=
  1.7); tau of the energy ~20 steps, so 600 steps are >= 20 tau.
  """
  z2, z1, ratio, tau = gaussian_moments(name)
  print(f"\n{name}: E[x^2]/T={ratio:.4f} z={z2:+.2f}, E[x] z={z1:+.2f}, tau={tau:.1f}")
  assert STEPS_GAUSS >= BURN_IN_TAUS * tau
  assert abs(z2) < N_SIGMA and abs(z1) < N_SIGMA, (z2, z1)


@pytest.mark.parametrize("name", ["sparse_state_dependent", "layerwise_state_dependent"])
def test_sparse_and_layerwise_check_catches_a_state_dependent_selection(name):
  """The same moment check fails when the entries (sparse) or the leaf
  (layerwise) are chosen depending on the params: such a selection is
  asymmetric, and with log_ratio = 0 the chains sample the wrong variance
  (measured: E[x^2]/T = 0.75 and 0.66, z = -34 and -48)."""
  z2, z1, ratio, _ = gaussian_moments(name)
  print(f"\n{name}: E[x^2]/T={ratio:.4f} z={z2:+.2f}, E[x] z={z1:+.2f}")
  assert abs(z2) >= N_SIGMA or abs(z1) >= N_SIGMA, (z2, z1)


# --------------------------------------------------------------------------
# 3 and 6. Metropolis-Hastings: an asymmetric move with its log_ratio, alone
# and inside a partition with a discrete and a Gaussian part.


def multiplicative(scale=1.0):
  """A move of positive params: x' = x exp(c sigma z), z ~ N(0, 1) per entry.

  The log of x takes a symmetric Gaussian step, so in x the move is
  asymmetric: q(x' | x) = N(log x'; log x, (c sigma)^2) / x', and the
  Hastings term is log q(x | x') - log q(x' | x) = sum log(x' / x)
  = c sigma sum z.
  """

  def propose(key, state, params, sigma, scales):
    del state, scales
    leaves, treedef = jax.tree_util.tree_flatten(params)
    moves, log_ratio = [], 0.0
    for k, x in zip(jax.random.split(key, len(leaves)), leaves):
      step = (scale * sigma).astype(x.dtype) * jax.random.normal(k, x.shape, x.dtype)
      moves.append(x * jnp.expm1(step))
      log_ratio = log_ratio + jnp.sum(step)
    return jax.tree_util.tree_unflatten(treedef, moves), log_ratio

  return proposals.Proposal(_no_state, propose, _keep_state)


def gamma3_cdf(x, theta):
  """CDF of the Gamma(shape 3, scale theta) law: 1 - e^-y (1 + y + y^2/2)."""
  y = np.asarray(x, np.float64) / theta
  return 1.0 - np.exp(-y) * (1.0 + y + 0.5 * y**2)


def gamma3_quantile(q, theta):
  lo, hi = 0.0, 100.0 * theta
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if gamma3_cdf(mid, theta) < q else (lo, mid)
  return 0.5 * (lo + hi)


# U(x) = x - log x at T = 0.5 gives exp(-U/T) = x^2 e^(-x/0.5): Gamma(3, 0.5),
# mean 1.5, variance 0.75. Without the Hastings term the chain samples
# exp(-U/T) / x, Gamma(2, 0.5), mean 1.0.
T_MH = 0.5
M_MH = 4096
STEPS_MH = 400
MH_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def gamma_energy(x):
  return jnp.sum(x - jnp.log(x))


def gamma_checks(y):
  """z-scores of the mean and of the CDF at five quantiles of Gamma(3, T_MH)
  for iid samples ``y`` (binomial standard errors for the CDF)."""
  y = np.asarray(y, np.float64).ravel()
  zs = {"mean": mean_z(y, 3.0 * T_MH)}
  for q in MH_QUANTILES:
    below = int(np.sum(y < gamma3_quantile(q, T_MH)))
    zs[f"F{q}"] = fraction_z(below, y.size, q)
  return zs


def multiplicative_chains(move):
  key = jax.random.fold_in(jax.random.key(SEED), 6)
  start_key, chain_key = jax.random.split(key)
  x0 = jax.random.uniform(start_key, (M_MH, 4), minval=0.2, maxval=3.0)
  tx = amc_jax.metropolis(0.6, T_MH, proposal=move)
  x, state, trace = run_chains(tx, gamma_energy, x0, chain_key, STEPS_MH)
  return x, trace


def test_hastings_ratio_makes_an_asymmetric_move_exact():
  """A multiplicative move with its log_ratio samples Gamma(3, 0.5).

  U(x) = sum_i (x_i - log x_i), four entries, T = 0.5: every x_i ~
  Gamma(3, 0.5) independently. 4096 chains, 400 steps, final states: 16384
  iid values. The mean (standard error from the sample spread) and the
  fraction below the 5/25/50/75/95% quantiles (binomial error bars) must all
  be within 5 standard errors. tau of the energy ~10 steps.
  """
  x, trace = multiplicative_chains(multiplicative())
  zs = gamma_checks(x)
  tau = energy_tau(trace)
  print(f"\nmultiplicative: mean={x.mean():.4f} (1.5) z={zs} tau={tau:.1f}")
  assert STEPS_MH >= BURN_IN_TAUS * tau
  assert all(abs(z) < N_SIGMA for z in zs.values()), zs


def test_hastings_check_catches_a_missing_log_ratio():
  """The same checks fail for the same move with log_ratio = 0: the chain
  samples Gamma(2, 0.5), mean 1.0 (measured z of the mean: -91)."""
  x, _ = multiplicative_chains(drop_log_ratio(multiplicative()))
  zs = gamma_checks(x)
  print(f"\nno log_ratio: mean={x.mean():.4f} z={zs}")
  assert any(abs(z) >= N_SIGMA for z in zs.values()), zs


# U(s, x, y) = -h s + (x - a s)^2 / 2 + y - log y with s in {-1, 1}, T = 0.5:
# P(s) ~ exp(h s / T) (P(+1) = 1 / (1 + e^-1) = 0.731), x | s ~ N(a s, T),
# y ~ Gamma(3, T) independently.
PART_H, PART_A = 0.25, 0.5
M_PART = 4096
STEPS_PART = 400


def joint_energy(p):
  s, x, y = p["s"][0], p["x"][0], p["y"][0]
  return -PART_H * s + 0.5 * (x - PART_A * s) ** 2 + y - jnp.log(y)


def partition_chains(move):
  key = jax.random.fold_in(jax.random.key(SEED), 7)
  ks, kx, ky, chain_key = jax.random.split(key, 4)
  x0 = {
      "s": jnp.where(jax.random.bernoulli(ks, 0.5, (M_PART, 1)), 1.0, -1.0),
      "x": 2.0 * jax.random.normal(kx, (M_PART, 1)),
      "y": jax.random.uniform(ky, (M_PART, 1), minval=0.2, maxval=3.0),
  }
  tx = amc_jax.metropolis(1.0, T_MH, proposal=move)
  p, state, trace = run_chains(tx, joint_energy, x0, chain_key, STEPS_PART)
  return p, trace, np.asarray(state.n_accept)


def partition_checks(p):
  """z-scores of P(s = 1), E[x | s], Var(x | s) and E[y] for iid final states."""
  s, x, y = (np.asarray(p[k], np.float64)[:, 0] for k in ("s", "x", "y"))
  assert np.isin(s, (-1.0, 1.0)).all()
  p_up = 1.0 / (1.0 + math.exp(-2.0 * PART_H / T_MH))
  zs = {"P(s=1)": fraction_z(int(np.sum(s == 1.0)), s.size, p_up)}
  for sign in (1.0, -1.0):
    xs = x[s == sign]
    zs[f"E[x|{sign:+.0f}]"] = mean_z(xs, PART_A * sign)
    # Var of a sample variance of n normal values: 2 T^2 / (n - 1).
    zs[f"Var[x|{sign:+.0f}]"] = (xs.var(ddof=1) - T_MH) / (T_MH * math.sqrt(2.0 / (xs.size - 1)))
  zs["E[y]"] = mean_z(y, 3.0 * T_MH)
  return zs


PARTITION_LABELS = {"s": "spin", "x": "real", "y": "positive"}


def joint_move():
  return proposals.partition(
      {
          "spin": proposals.discrete((-1.0, 1.0), 1.0),
          "real": proposals.gaussian(),
          "positive": multiplicative(0.5),
      },
      PARTITION_LABELS,
  )


def test_partition_samples_the_joint_distribution():
  """A partition of a binary spin, a Gaussian move and a multiplicative move
  (with a Hastings term) samples exp(-U(s, x, y)/T) with the right marginals.

  Every step flips s (discrete with one entry: the at-least-one rule),
  shifts x and scales y, with one accept/reject for the three (log_ratio:
  the sum of the parts'; acceptance ~0.3). 4096 chains, 400 steps, final
  states: P(s = 1) = 0.731 (binomial error bar), E[x | s] = a s and
  Var(x | s) = T (normal error bars from the ~3000 and ~1100 chains in each
  s), E[y] = 3T; all within 5 standard errors. tau of the energy ~14 steps.
  """
  p, trace, n_accept = partition_chains(joint_move())
  zs = partition_checks(p)
  tau = energy_tau(trace)
  print(f"\npartition: {zs} tau={tau:.1f} acceptance={n_accept.mean() / STEPS_PART:.3f}")
  assert STEPS_PART >= BURN_IN_TAUS * tau
  assert all(abs(z) < N_SIGMA for z in zs.values()), zs


def test_partition_check_catches_a_dropped_log_ratio():
  """The same checks fail if the partition's log_ratio is dropped (as a
  partition that forgot to sum its parts' terms would): y then follows
  Gamma(2, T), E[y] = 1.0 instead of 1.5 (measured z ~ -40)."""
  p, _, _ = partition_chains(drop_log_ratio(joint_move()))
  zs = partition_checks(p)
  print(f"\npartition without log_ratio: {zs}")
  assert any(abs(z) >= N_SIGMA for z in zs.values()), zs


# --------------------------------------------------------------------------
# 4. orthogonal: singular values kept, and the right distribution of angles.


def rotation_variant(kind):
  """:func:`proposals.orthogonal` done wrong (log_ratio = 0):

  * ``"drift"``: the skew generator's entries are N(0.5, 1), not N(0, 1), so
    the rotation angle has a nonzero mean;
  * ``"linear"``: R = I + sigma A, the first-order Cayley map, which is not
    orthogonal (|det R| > 1).
  """

  def propose(key, state, params, sigma, scales):
    del state, scales
    leaves, treedef = jax.tree_util.tree_flatten(params)
    moves = []
    for k, w in zip(jax.random.split(key, len(leaves)), leaves):
      m = w.shape[1]
      g = jax.random.normal(k, (m, m), w.dtype)
      if kind == "drift":
        g = g + 0.5
      upper = jnp.triu(g, 1)
      a = sigma.astype(w.dtype) * (upper - upper.T)
      eye = jnp.eye(m, dtype=w.dtype)
      r_minus_i = a if kind == "linear" else jnp.linalg.solve(eye - a / 2, a)
      moves.append(jnp.matmul(w, r_minus_i, precision=lax.Precision.HIGHEST))
    return jax.tree_util.tree_unflatten(treedef, moves), 0.0

  return proposals.Proposal(_no_state, propose, _keep_state)


ROTATION_STEPS = 1000
SVD_TOL = 1e-5


def _matrix(n, m, singular_values, seed):
  rng = np.random.default_rng(seed)
  u = np.linalg.qr(rng.standard_normal((n, n)))[0][:, :m]
  v = np.linalg.qr(rng.standard_normal((m, m)))[0]
  return (u * np.asarray(singular_values)) @ v.T


def rotated_singular_values(move):
  """The largest change of a singular value (computed in float64, of the
  float32 matrices) at any step of 1000 moves, the largest change of an
  entry, and the number of moves accepted.

  Two leaves: 8x6 with singular values 3, 2.5, ..., 0.5 and 6x6 with
  2, 1.7, ..., 0.5. The loss is flat, so every move is accepted. sigma = 0.5
  rotates by ~0.5 rad per generator entry.
  """
  params = {
      "a": jnp.asarray(_matrix(8, 6, np.linspace(3.0, 0.5, 6), 1), jnp.float32),
      "b": jnp.asarray(_matrix(6, 6, np.linspace(2.0, 0.5, 6), 2), jnp.float32),
  }
  tx = amc_jax.metropolis(0.5, 1.0, proposal=move, seed=SEED)
  flat = lambda p: jnp.zeros((), jnp.float32)

  @jax.jit
  def go(params):
    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=flat)
      params = optax.apply_updates(params, updates)
      return (params, state), params

    (_, state), path = lax.scan(body, (params, tx.init(params)), None, length=ROTATION_STEPS)
    return path, state.n_accept

  path, n_accept = go(params)
  drift, moved = [], []
  for k in ("a", "b"):
    w0, w = np.asarray(params[k], np.float64), np.asarray(path[k], np.float64)
    s0 = np.linalg.svd(w0, compute_uv=False)
    drift.append(np.max(np.abs(np.linalg.svd(w, compute_uv=False) - s0)))
    moved.append(np.max(np.abs(w - w0)))
  return max(drift), max(moved), int(n_accept)


def test_orthogonal_keeps_singular_values():
  """Over 1000 accepted float32 rotations the singular values of both
  matrices stay within 1e-5 (absolute; they lie in [0.5, 3]) of their start
  at every step (measured: 4.7e-6), while the matrices themselves move by
  O(1)."""
  drift, moved, n_accept = rotated_singular_values(proposals.orthogonal())
  print(f"\northogonal: max |s_t - s_0| = {drift:.2e}, max |w_t - w_0| = {moved:.2f},"
        f" {n_accept} accepted moves")
  assert n_accept == ROTATION_STEPS
  assert moved > 0.5
  assert drift < SVD_TOL, drift


def test_orthogonal_check_catches_a_non_orthogonal_map():
  """The same check fails for R = I + sigma A, which is not orthogonal: the
  matrices grow by |det R| > 1 per step until they overflow."""
  drift, _, n_accept = rotated_singular_values(rotation_variant("linear"))
  print(f"\nlinear: max |s_t - s_0| = {drift:.2e} over {n_accept} accepted moves")
  assert not drift < SVD_TOL, drift


T_ANGLE = 1.0
M_ANGLE = 4096
STEPS_ANGLE = 200
N_BINS = 24


def angle_energy(w):
  # W = [[cos t, -sin t], [sin t, cos t]]: U(t) = -1.5 cos t - sin 2t, whose
  # Boltzmann weights at T = 1 span a factor 70.
  return -1.5 * w[0, 0] - 2.0 * w[0, 0] * w[1, 0]


def angle_histogram(move):
  """Final angles of M_ANGLE chains of 2x2 rotations on U(theta) at T_ANGLE.

  All chains start at theta = pi (W = -I), near the top of the energy. W R for a
  2x2 Cayley rotation R is the rotation by theta + phi, phi symmetric about
  0 for the right move, so the chain is a Metropolis walk on the circle and
  samples exp(-U(theta)/T) dtheta. Returns the counts in 24 equal bins of
  [-pi, pi), the exact bin probabilities (midpoint rule on 24000 points,
  relative error ~1e-7), and tau.
  """
  key = jax.random.fold_in(jax.random.key(SEED), 4)
  x0 = jnp.broadcast_to(-jnp.eye(2), (M_ANGLE, 2, 2))
  tx = amc_jax.metropolis(1.5, T_ANGLE, proposal=move)
  w, _, trace = run_chains(tx, angle_energy, x0, key, STEPS_ANGLE)
  theta = np.arctan2(w[:, 1, 0], w[:, 0, 0])
  edges = np.linspace(-np.pi, np.pi, N_BINS + 1)
  counts = np.histogram(theta, edges)[0]
  fine = -np.pi + (np.arange(N_BINS * 1000) + 0.5) * (2 * np.pi / (N_BINS * 1000))
  density = np.exp((1.5 * np.cos(fine) + np.sin(2 * fine)) / T_ANGLE)
  p = density.reshape(N_BINS, 1000).sum(axis=1)
  return counts, p / p.sum(), energy_tau(trace)


def test_orthogonal_samples_the_angle_distribution():
  """2x2 rotations at T = 1: the final angles of 4096 chains (200 steps,
  sigma = 1.5) follow exp(-U(theta)/T) on the circle, 24 bins, chi-square
  normal score < 5 (measured +2.1). tau of the energy ~6 steps."""
  counts, p, tau = angle_histogram(proposals.orthogonal())
  score, chi2, dof = chi2_score(counts, M_ANGLE * p)
  print(f"\nangles: chi2={chi2:.1f} dof={dof} score={score:+.2f} tau={tau:.1f}")
  assert p.max() / p.min() > 50
  assert STEPS_ANGLE >= BURN_IN_TAUS * tau
  assert score < N_SIGMA, (chi2, dof)


def test_orthogonal_angle_check_catches_a_drifting_rotation():
  """The same check fails for rotations whose angle has a nonzero mean
  (measured score 31)."""
  counts, p, _ = angle_histogram(rotation_variant("drift"))
  score, chi2, dof = chi2_score(counts, M_ANGLE * p)
  print(f"\ndrifting angles: chi2={chi2:.1f} dof={dof} score={score:+.2f}")
  assert score >= N_SIGMA, (chi2, dof)


# --------------------------------------------------------------------------
# 5. Structure: grids, fractions, leaf choices, errors.

_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _bits(a):
  a = np.asarray(a)
  return a.view(_BITS[a.dtype.itemsize])


def grid_path(params, labels, n_steps=200, n_chains=16):
  """Every params of ``n_chains`` metropolis chains at T = 1 on a coupled
  energy at each of ``n_steps`` steps (via optax.apply_updates), and the
  final state. The move is a partition of discrete(4 levels, f = 0.5) with
  step="any" (label "any") and step="neighbour" (label "neighbour")."""
  move = proposals.partition(
      {
          step: proposals.discrete(QUANT_LEVELS, 0.5, step=step)
          for step in ("any", "neighbour")
      },
      labels,
  )
  tx = amc_jax.metropolis(1.0, 1.0, proposal=move)
  loss_dtype = jnp.result_type(float)

  def energy(p):
    x = jnp.concatenate([v.astype(loss_dtype).ravel() for v in jax.tree_util.tree_leaves(p)])
    return jnp.sum(0.5 * x**2 - 0.25 * x) - 0.25 * jnp.sum(x[1:] * x[:-1])

  @jax.jit
  def go(x0, key):
    state = amc_jax.init_ensemble(tx, x0, key)
    upd = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=energy))

    def body(carry, _):
      x, state = carry
      updates, state = upd(x, state)
      x = optax.apply_updates(x, updates)
      return (x, state), x

    (_, state), path = lax.scan(body, (x0, state), None, length=n_steps)
    return path, state

  x0 = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (n_chains,) + v.shape), params)
  path, state = go(x0, jax.random.key(SEED))
  return jax.tree_util.tree_map(np.asarray, path), state


def _assert_on_grid(path, params):
  for k, v in path.items():
    assert v.dtype == params[k].dtype, (k, v.dtype)
    grid = _bits(np.asarray(QUANT_LEVELS).astype(np.asarray(params[k]).dtype))
    bits = _bits(v)
    assert np.isin(bits, grid).all(), k
    # Every level is visited, and entries do move: the check is not vacuous.
    assert set(np.unique(bits).tolist()) == set(grid.tolist()), k
    assert (np.diff(bits.astype(np.int64), axis=0) != 0).mean() > 0.05, k


def test_discrete_stays_on_the_grid_bit_for_bit():
  """bfloat16 and float32 params, moved by step="any" and by
  step="neighbour", stay exactly on the levels (compared as bits) at every
  one of 200 steps of 16 chains through optax.apply_updates, keep their
  dtypes, visit every level and move often."""
  params = {
      "any_b": jnp.asarray([1.5, -1.5, 0.5, -0.5], jnp.bfloat16),
      "any_f": jnp.asarray([[-0.5, 0.5], [-1.5, 1.5]], jnp.float32),
      "nb_b": jnp.asarray([1.5, -1.5, 0.5, -0.5], jnp.bfloat16),
      "nb_f": jnp.asarray([[-0.5, 0.5], [-1.5, 1.5]], jnp.float32),
  }
  labels = {"any_b": "any", "any_f": "any", "nb_b": "neighbour", "nb_f": "neighbour"}
  path, state = grid_path(params, labels)
  _assert_on_grid(path, params)
  assert int(np.min(state.n_accept)) > 20


@pytest.mark.parametrize("step", ["any", "neighbour"])
def test_discrete_stays_on_the_grid_in_float64(x64, step):
  """The same for float64 params (with x64 on, the loss is float64 too)."""
  del x64
  params = {"d": jnp.asarray([1.5, -1.5, 0.5, -0.5, 0.5, 1.5], jnp.float64)}
  path, state = grid_path(params, {"d": step})
  _assert_on_grid(path, params)
  assert int(np.min(state.n_accept)) > 20


def test_discrete_rejects_bad_grids_and_off_grid_params():
  """Clear errors, with the offending values, for: fewer than two levels,
  duplicate levels, non-finite levels, a bad step or fraction, levels whose
  differences are not exact in the params' dtype (checked at init, per
  dtype), levels that collapse in bfloat16, and params off the grid (named
  by leaf)."""
  with pytest.raises(ValueError, match="at least two"):
    proposals.discrete((1.0,), 0.5)
  with pytest.raises(ValueError, match="at least two"):
    proposals.discrete((), 0.5)
  with pytest.raises(ValueError, match="distinct"):
    proposals.discrete((-1.0, 1.0, -1.0), 0.5)
  with pytest.raises(ValueError, match="finite"):
    proposals.discrete((-1.0, math.inf), 0.5)
  with pytest.raises(ValueError, match="step must be"):
    proposals.discrete((-1.0, 1.0), 0.5, step="nearest")
  with pytest.raises(ValueError, match="fraction"):
    proposals.discrete((-1.0, 1.0), 0.0)
  with pytest.raises(TypeError, match="sequence"):
    proposals.discrete("ab", 0.5)

  # (0.1, 0.3, 0.7): in float32, 0.1 + (0.3 - 0.1) is not 0.3. Construction
  # succeeds (the dtype is not known yet); init refuses, naming the pair.
  inexact = proposals.discrete((0.1, 0.3, 0.7), 0.5)
  with pytest.raises(ValueError, match=r"cannot keep float32 params exactly.*rounds to"):
    inexact.init(jnp.asarray([0.1, 0.3], jnp.float32))
  with pytest.raises(ValueError, match="cannot keep float32"):
    amc_jax.metropolis(0.1, 1.0, proposal=inexact).init(jnp.asarray([0.1], jnp.float32))
  # 1 and 1 + 2^-8 are distinct in float32 but the same bfloat16.
  close = proposals.discrete((1.0, 1.0 + 2.0**-8), 0.5)
  close.init(jnp.asarray([1.0], jnp.float32))
  with pytest.raises(ValueError, match="not distinct in bfloat16"):
    close.init(jnp.asarray([1.0], jnp.bfloat16))

  binary = proposals.discrete((-1.0, 1.0), 0.5)
  with pytest.raises(ValueError, match=r"\['w'\] has 2 entries off the grid"):
    binary.init({"v": jnp.ones(3), "w": jnp.asarray([1.0, 0.5, -1.0, 0.0])})
  with pytest.raises(ValueError, match="off the grid"):
    amc_jax.amc(0.1, proposal=binary).init({"w": jnp.asarray([1.0, 0.5])})


def test_orthogonal_rejects_non_matrix_leaves_by_name():
  """A 1-D (or 3-D) leaf is refused at init and at propose, with its name."""
  params = {"w": jnp.eye(3), "b": jnp.zeros(3)}
  with pytest.raises(ValueError, match=r"\['b'\] has shape \[3\]"):
    proposals.orthogonal().init(params)
  with pytest.raises(ValueError, match=r"\['b'\]"):
    amc_jax.metropolis(0.1, proposal=proposals.orthogonal()).init(params)
  with pytest.raises(ValueError, match=r"\['c'\] has shape \[2, 2, 2\]"):
    proposals.orthogonal().propose(
        jax.random.key(0), (), {"c": jnp.ones((2, 2, 2))}, 0.1, None
    )


def _many_moves(move, params, n, case):
  """``n`` independent proposals of ``move`` from ``params`` (one key each)."""
  keys = jax.random.split(jax.random.fold_in(jax.random.key(SEED), case), n)
  state = move.init(params)
  propose = jax.jit(jax.vmap(lambda k: move.propose(k, state, params, 0.1, None)[0]))
  return jax.tree_util.tree_map(np.asarray, propose(keys))


def _moved(moves):
  """Number of entries moved per proposal, (n,), over all leaves."""
  return sum(
      (m != 0).reshape(m.shape[0], -1).sum(axis=1) for m in jax.tree_util.tree_leaves(moves)
  )


def sparse_variant(fraction, rule):
  """:func:`proposals.sparse` with a wrong selection rule:

  * ``"per_leaf"``: one draw per leaf, the whole leaf moves with probability
    ``fraction`` (right mean, wrong spread);
  * ``"plus_one"``: the at-least-one rule done by always adding a uniformly
    chosen entry;
  * ``"first"``: when no entry is selected, the first entry moves (not a
    uniform one).
  """
  inner = proposals.gaussian()

  def propose(key, state, params, sigma, scales):
    move_key, mask_key, extra_key = jax.random.split(key, 3)
    move, _ = inner.propose(move_key, state, params, sigma, scales)
    leaves, treedef = jax.tree_util.tree_flatten(move)
    sizes = [m.size for m in leaves]
    n = sum(sizes)
    if rule == "per_leaf":
      u = jax.random.uniform(mask_key, (len(leaves),))
      mask = jnp.repeat(u < fraction, np.asarray(sizes), total_repeat_length=n)
    else:
      u = jax.random.uniform(mask_key, (n,))
      mask = u < fraction
      if rule == "plus_one":
        mask = mask | (jnp.arange(n) == jax.random.randint(extra_key, (), 0, n))
      else:
        mask = mask | (~jnp.any(mask) & (jnp.arange(n) == 0))
    out, offset = [], 0
    for m, size in zip(leaves, sizes):
      out.append(jnp.where(mask[offset : offset + size].reshape(m.shape), m, jnp.zeros_like(m)))
      offset += size
    return jax.tree_util.tree_unflatten(treedef, out), 0.0

  return proposals.Proposal(inner.init, propose, inner.update)


SPARSE_PARAMS = {"a": jnp.zeros((10, 50)), "b": jnp.zeros(500)}


def sparse_fraction_z(move):
  """z-scores for 2000 proposals on 1000 entries (two leaves) at f = 0.1:
  the mean number moved against f N (the at-least-one correction (1-f)^N is
  1e-46), the variance of that number against the binomial N f (1 - f) (the
  sample variance of 2000 near-normal counts has a relative standard error
  sqrt(2/1999)), and each leaf's moved fraction against f."""
  f, n = 0.1, 2000
  moves = _many_moves(move, SPARSE_PARAMS, n, case=50)
  counts = _moved(moves)
  big_n = 1000
  var = big_n * f * (1 - f)
  zs = {
      "mean": (counts.mean() - f * big_n) / math.sqrt(var / n),
      "var": (counts.var(ddof=1) - var) / (var * math.sqrt(2.0 / (n - 1))),
  }
  for k, m in moves.items():
    zs[k] = fraction_z(int((m != 0).sum()), m.size, f)
  return zs


def test_sparse_moves_the_stated_fraction():
  """Each entry moves with probability f: mean, binomial spread and per-leaf
  fraction of the moved entries within 5 standard errors; the others move by
  exactly 0."""
  zs = sparse_fraction_z(proposals.sparse(0.1))
  print(f"\nsparse fraction: {zs}")
  assert all(abs(z) < N_SIGMA for z in zs.values()), zs


def test_sparse_fraction_check_catches_a_per_leaf_selection():
  """The same check fails when whole leaves are selected (right mean number
  of entries, far too wide a spread)."""
  zs = sparse_fraction_z(sparse_variant(0.1, "per_leaf"))
  print(f"\nper-leaf selection: {zs}")
  assert any(abs(z) >= N_SIGMA for z in zs.values()), zs


def at_least_one_scores(move):
  """The at-least-one rule, two checks over 20000 proposals each:

  * on 4 entries at f = 0.2, the number moved k has P(1) = 4 f (1-f)^3 +
    (1-f)^4 = 0.8192 (none selected -> one moves), P(k) binomial for k >= 2;
    chi-square normal score over k = 1..4;
  * at f = 1e-9 exactly one entry of 50 (two leaves) moves, each with
    probability 1/50: chi-square normal score over the 50. (float32 uniforms
    are multiples of 2^-23, so u < 1e-9 means u = 0, and that entry is the
    minimum anyway: two entries move only if two draw u = 0, probability
    ~2e-11 per proposal.)

  Returns (score of k, score of the choice, numbers moved at f = 1e-9).
  """
  f = 0.2
  counts = _moved(_many_moves(move(f), {"x": jnp.zeros(4)}, 20_000, case=51))
  p = np.array([math.comb(4, k) * f**k * (1 - f) ** (4 - k) for k in range(5)])
  p[1] += p[0]
  observed = np.bincount(counts, minlength=5)
  assert observed[0] == 0
  score_k = chi2_score(observed[1:], 20_000 * p[1:])[0]

  tiny = _many_moves(move(1e-9), {"a": jnp.zeros(20), "b": jnp.zeros((5, 6))}, 20_000, case=52)
  flat = np.concatenate([tiny["a"], tiny["b"].reshape(20_000, 30)], axis=1) != 0
  score_choice = chi2_score(flat.sum(axis=0), np.full(50, flat.sum() / 50))[0]
  return score_k, score_choice, flat.sum(axis=1)


def test_sparse_moves_at_least_one_entry():
  """Every proposal moves at least one entry; with a tiny fraction exactly
  one, chosen uniformly; and the number moved has the law stated in the
  docstring of :func:`proposals.sparse` (fN + (1-f)^N on average)."""
  score_k, score_choice, n_moved = at_least_one_scores(proposals.sparse)
  print(f"\nat least one: score(k)={score_k:+.2f} score(choice)={score_choice:+.2f}")
  np.testing.assert_array_equal(n_moved, 1)
  assert score_k < N_SIGMA and score_choice < N_SIGMA


@pytest.mark.parametrize("rule", ["plus_one", "first"])
def test_at_least_one_check_catches_wrong_rules(rule):
  """The same checks fail for an extra entry always added (wrong law of k)
  and for a fallback that always picks the first entry (not uniform)."""
  score_k, score_choice, _ = at_least_one_scores(lambda f: sparse_variant(f, rule))
  print(f"\n{rule}: score(k)={score_k:+.2f} score(choice)={score_choice:+.2f}")
  assert score_k >= N_SIGMA or score_choice >= N_SIGMA


LAYER_PARAMS = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2)), "c": jnp.zeros(5), "d": jnp.zeros(())}


def layer_choice(move):
  """Over 20000 proposals on 4 leaves (sizes 3, 4, 5, 1): how many leaves
  moved in each (a leaf moved = any entry nonzero), whether the moved leaf
  moved entirely, and z-scores of each leaf's frequency against 1/4
  (binomial error bars)."""
  n = 20_000
  moves = _many_moves(move, LAYER_PARAMS, n, case=53)
  any_moved = np.stack([(m != 0).reshape(n, -1).any(axis=1) for m in moves.values()], axis=1)
  all_moved = np.stack([(m != 0).reshape(n, -1).all(axis=1) for m in moves.values()], axis=1)
  zs = {k: fraction_z(int(any_moved[:, i].sum()), n, 0.25) for i, k in enumerate(moves)}
  return any_moved.sum(axis=1), (any_moved == all_moved).all(), zs


def layerwise_by_size():
  """:func:`proposals.layerwise` done wrong: the leaf of a uniformly chosen
  ENTRY moves, so a leaf is chosen with probability size / N."""
  inner = proposals.gaussian()

  def propose(key, state, params, sigma, scales):
    move_key, leaf_key = jax.random.split(key)
    move, _ = inner.propose(move_key, state, params, sigma, scales)
    leaves, treedef = jax.tree_util.tree_flatten(move)
    owner = np.repeat(np.arange(len(leaves)), [max(m.size, 1) for m in leaves])
    chosen = jnp.asarray(owner)[jax.random.randint(leaf_key, (), 0, owner.size)]
    leaves = [jnp.where(chosen == i, m, jnp.zeros_like(m)) for i, m in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves), 0.0

  return proposals.Proposal(inner.init, propose, inner.update)


def test_layerwise_moves_one_uniformly_chosen_leaf():
  """Exactly one leaf moves per proposal, all of its entries, the others by
  exactly 0; each leaf is chosen with probability 1/4 within 5 binomial
  standard errors (0.003)."""
  n_leaves, whole, zs = layer_choice(proposals.layerwise())
  print(f"\nlayerwise choice: {zs}")
  np.testing.assert_array_equal(n_leaves, 1)
  assert whole
  assert all(abs(z) < N_SIGMA for z in zs.values()), zs


def test_layerwise_check_catches_a_size_weighted_choice():
  """The same check fails for a choice weighted by leaf size."""
  _, _, zs = layer_choice(layerwise_by_size())
  print(f"\nsize-weighted choice: {zs}")
  assert any(abs(z) >= N_SIGMA for z in zs.values()), zs


# --------------------------------------------------------------------------
# 7. amc(epsilon=) is proposal=gaussian(epsilon); tx.update(temperature=).


def _loss7(p):
  return jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum(jnp.sin(3.0 * p["b"]))


def _params7():
  return {"w": jnp.zeros((3, 4)), "b": jnp.linspace(-1.0, 1.0, 4)}


def trajectory(tx, n_steps=200, temperature=None):
  """Params after every step, and every state, of one chain of ``tx``;
  ``temperature`` (if given) is passed to every ``tx.update``."""
  extra = {} if temperature is None else {"temperature": temperature}

  @jax.jit
  def go(params):
    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=_loss7, **extra)
      params = optax.apply_updates(params, updates)
      return (params, state), (params, state)

    return lax.scan(body, (params, tx.init(params)), None, length=n_steps)[1]

  params, states = go(_params7())
  states = states._replace(key=jax.random.key_data(states.key))
  return jax.tree_util.tree_map(np.asarray, (params, states))


def _assert_identical(a, b):
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_amc_epsilon_is_the_gaussian_proposal(epsilon):
  """amc(s, epsilon=e) and amc(s, proposal=gaussian(e)) agree bit for bit
  over 200 steps: params and every state leaf (key, mu, sigma, counters,
  loss, info) at every step. The run accepts, rejects and resets (n_reset =
  5), and for e = 0.1 mu moves, so every branch is compared."""
  a = trajectory(amc_jax.amc(0.3, epsilon=epsilon, n_reset=5, seed=3))
  b = trajectory(amc_jax.amc(0.3, n_reset=5, seed=3, proposal=proposals.gaussian(epsilon)))
  _assert_identical(a, b)
  _, states = a
  assert 0 < states.n_accept[-1] < 150 and states.info.reset.any()
  mu_moved = any(np.any(m != 0) for m in jax.tree_util.tree_leaves(states.mu))
  assert mu_moved == (epsilon != 0.0)


def test_temperature_argument_replaces_the_transformation_temperature():
  """tx.update(..., temperature=T) runs the step at T: bit for bit the run of
  a transformation built with T (from T = 0 with temperature=2.0 passed), and
  passing the transformation's own temperature changes nothing. The runs
  accept uphill moves, so the temperature matters."""
  hot = trajectory(amc_jax.metropolis(0.3, 2.0, seed=4))
  _assert_identical(trajectory(amc_jax.metropolis(0.3, 0.0, seed=4), temperature=2.0), hot)
  _assert_identical(trajectory(amc_jax.metropolis(0.3, 2.0, seed=4), temperature=2.0), hot)
  _, states = hot
  uphill = states.info.accepted & (np.diff(states.loss, prepend=np.inf) > 0)
  assert uphill.sum() > 10


def first_steps(temperature):
  """20000 fresh first steps of metropolis(0.8, T = 0) from the same x, each
  with its own key, ``temperature`` passed to tx.update (None: not passed)."""
  x0 = {"w": jnp.asarray([0.7, -0.3], jnp.float32)}
  loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
  tx = amc_jax.metropolis(0.8, 0.0)
  extra = {} if temperature is None else {"temperature": temperature}
  state0 = tx.init(x0)

  @jax.jit
  def go(keys):
    def one(key):
      _, state = tx.update(None, state0._replace(key=key), x0, value_fn=loss, **extra)
      return state.info

    return jax.vmap(one)(keys)

  info = go(jax.random.split(jax.random.key(SEED), 20_000))
  return float(loss(x0)), jax.tree_util.tree_map(np.asarray, info)


def uphill_z(u0, info, temperature):
  """Accepted uphill moves against their Metropolis probabilities at T.

  Given the proposals, the decisions are independent Bernoulli(p_i) with
  p_i = exp(-(U'_i - U)/T) for the uphill ones, so the number accepted has
  mean sum p_i and variance sum p_i (1 - p_i).
  """
  du = info.proposed_loss.astype(np.float64) - u0
  up = du > 0
  p = np.exp(-du[up] / temperature)
  return (info.accepted[up].sum() - p.sum()) / math.sqrt(np.sum(p * (1 - p))), p


def test_temperature_argument_sets_the_uphill_acceptance():
  """metropolis at T = 0 with temperature=5.0 passed accepts each uphill
  move with probability exp(-dU/5): per proposal, the reported probability is
  that (rtol 1e-5), and the number accepted is within 5 standard errors of
  sum p_i. The same check fails without the argument (T = 0: no uphill
  move accepted)."""
  u0, info = first_steps(5.0)
  z, p = uphill_z(u0, info, 5.0)
  up = info.proposed_loss > u0
  print(f"\nT=5 passed: uphill {up.sum()}, z={z:+.2f}")
  np.testing.assert_allclose(info.acceptance_probability[up], p, rtol=1e-5)
  assert abs(z) < N_SIGMA

  u0, info = first_steps(None)
  z, _ = uphill_z(u0, info, 5.0)
  print(f"T not passed: z={z:+.2f}")
  assert abs(z) >= N_SIGMA


def test_leaf_by_leaf_normals_are_the_documented_flat_draw_bit_for_bit():
  # standard_normal_like draws leaf by leaf (no N-sized draw held in memory),
  # but its numbers are jax.random.normal(key, (N,)) cut into the leaves.
  from amc_jax._src import proposals as proposals_lib

  params = {"a": jnp.zeros((31, 17)), "b": jnp.zeros(()), "c": jnp.zeros((1000,)),
            "d": jnp.zeros((2, 3, 4))}
  n = 31 * 17 + 1 + 1000 + 24
  for seed in (0, 7, 123456):
    key = jax.random.key(seed)
    assert proposals_lib._leafwise_ok(key, params, jnp.float32)
    z = jax.jit(amc_jax.standard_normal_like)(key, params)
    flat = jax.random.normal(key, (n,))
    ours = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(z)])
    np.testing.assert_array_equal(
        np.asarray(ours).view(np.uint32), np.asarray(flat).view(np.uint32)
    )
  # The deliberately wrong variant, counters that restart at 0 in every leaf,
  # is another stream: leaf "c" would be the first 1000 numbers of the key.
  restarted = jax.random.normal(key, (1000,))
  assert not np.array_equal(np.asarray(restarted), np.asarray(z["c"]))


@pytest.mark.parametrize("block", [None, 64])
def test_large_leaves_drawn_in_blocks_are_the_flat_draw_bit_for_bit(monkeypatch, block):
  """Leaves larger than the block size draw their normals block by block (a
  loop, bounded temporaries): whole blocks, a tail, an exact multiple and a
  leaf one past it give jax.random.normal(key, (N,)) cut into the leaves.
  ``block=None`` is the library's block size with a leaf just above it."""
  from amc_jax._src import proposals as proposals_lib

  if block is None:
    b = proposals_lib._BLOCK
    params = {"big": jnp.zeros((b + 3,)), "small": jnp.zeros((5,))}
  else:
    monkeypatch.setattr(proposals_lib, "_BLOCK", block)
    params = {"a": jnp.zeros((7, 3 * block // 7 + 1)), "b": jnp.zeros((2 * block,)),
              "c": jnp.zeros((block + 1,)), "d": jnp.zeros((block,)), "e": jnp.zeros((3,))}
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  key = jax.random.key(11)
  z = jax.jit(amc_jax.standard_normal_like)(key, params)
  ours = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(z)])
  flat = jax.random.normal(key, (n,))
  np.testing.assert_array_equal(np.asarray(ours).view(np.uint32), np.asarray(flat).view(np.uint32))


def test_small_leaves_share_one_threefry_call():
  """Consecutive leaves smaller than the block share one draw: the sine net's
  three leaves of 30 make one threefry call, not three (each is a step of its
  own on XLA:CPU); a leaf larger than the block stays alone; groups stay
  within one block."""
  from amc_jax._src import proposals as proposals_lib

  def threefry_calls(params):
    jaxpr = jax.make_jaxpr(amc_jax.standard_normal_like)(jax.random.key(0), params)
    return str(jaxpr).count("threefry2x32")

  sine = {"a": jnp.zeros(30), "b": jnp.zeros(30), "w": jnp.zeros(30)}
  assert threefry_calls(sine) == 1
  assert proposals_lib._runs([30, 30, 30]) == [[0, 1, 2]]
  b = proposals_lib._BLOCK
  assert proposals_lib._runs([5, b + 1, 3, 4]) == [[0], [1], [2, 3]]
  assert proposals_lib._runs([b // 2, b // 2, 1]) == [[0, 1], [2]]
  # The wrong variant, one draw per leaf, makes three calls.
  per_leaf = sum(threefry_calls({"x": jnp.zeros(30)}) for _ in sine)
  assert per_leaf == 3
