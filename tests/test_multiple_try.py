"""Several proposals per step: ``amc(..., num_proposals=K)``.

* ``K = 1`` is the single-proposal step, bit for bit.
* ``T = 0``: an exact replay of the documented random stream: the K moves
  are ``gaussian_move(k_i, mu, sigma)`` for ``k_i`` in
  ``jax.random.split(proposal_key, K)``, the lowest loss is taken, and it is
  accepted iff it does not exceed U(x).
* ``T > 0``: multiple-try Metropolis samples the Boltzmann distribution. Many
  independent chains (ESS = number of chains exactly, since their final
  states are independent) from a spread of starts, each run far past its
  mixing time, on an asymmetric double well and on a Gaussian; observables
  checked against exact values from quadrature within 5 standard errors. The
  naive rule "take the best of K, then a Metropolis test against x", written
  in this file and run through the same kernel, fails the same check by far
  more (so the check has power).
"""

import math
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax
from amc_jax._src import acceptance
from amc_jax._src import amc as amc_lib

sys.path.insert(0, os.path.dirname(__file__))
import compiled_memory  # noqa: E402

N_SIGMA = 5.0


def double_well(params):
  x = params["x"][0]
  return (x**2 - 1.0) ** 2 + 0.3 * x


def exact_double_well(temperature):
  """Mean and variance of x, x^2 and 1[x > 0] under exp(-U/T), by quadrature."""
  x = np.linspace(-4.0, 4.0, 400_001)
  w = np.exp(-((x**2 - 1.0) ** 2 + 0.3 * x) / temperature)
  w /= w.sum()
  out = {}
  for name, f in {"x": x, "x2": x**2, "right": (x > 0).astype(np.float64)}.items():
    mean = float(np.sum(w * f))
    out[name] = (mean, float(np.sum(w * f**2)) - mean**2)
  return out


def run_chains(tx, loss, starts, n_steps):
  """Independent chains from ``starts`` (leading axis), final params only."""
  state = amc_jax.init_ensemble(tx, starts, jax.random.key(11))

  @jax.jit
  def go(params, state):
    def body(carry, _):
      p, s = carry
      u, s = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=loss))(p, s)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(body, (params, state), None, length=n_steps)[0]

  return go(starts, state)


def z_scores(samples, exact):
  """Per observable: (sample mean - exact mean) / sqrt(exact variance / M).

  M independent samples of the exact law have exactly that standard error.
  """
  x = np.asarray(samples, np.float64)
  obs = {"x": x, "x2": x**2, "right": (x > 0).astype(np.float64)}
  return {
      name: (values.mean() - exact[name][0]) / math.sqrt(exact[name][1] / values.size)
      for name, values in obs.items()
  }


def naive_best_of_k(num_proposals):
  """WRONG on purpose: the best of K trials, then Metropolis against x.

  Not reversible: it samples a colder distribution than exp(-U/T).
  """

  def try_moves(proposal_key, accept_key, proposal, state, params, scales, value_fn,
                signal_norm, current, temperature, cold):
    keys = jax.random.split(proposal_key, num_proposals)
    trials = jax.vmap(
        lambda k: amc_lib.propose_and_evaluate(k, proposal, state, params, scales, value_fn, signal_norm)
    )(keys)
    best = acceptance.best_index(trials.loss)
    trial = jax.tree_util.tree_map(lambda x: x[best], trials)._replace(log_ratio=0.0)
    return trial, acceptance.metropolis_decision(accept_key, current, trial.loss, temperature)

  return try_moves


def metropolis_k(sigma, temperature, k, try_move=None):
  if try_move is None:
    return amc_jax.metropolis(sigma, temperature, num_proposals=k)
  return amc_lib._transformation(  # pylint: disable=protected-access
      proposal=amc_jax.proposals.gaussian(), sigma0=sigma, n_reset=amc_lib._NEVER_RESET,
      sigma_decay=1.0, temperature=temperature, minibatch=False, signal_norm=False, seed=0,
      num_proposals=k, try_move=try_move,
  )


def test_one_proposal_is_the_single_proposal_step_bit_for_bit():
  params = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.zeros(2)}
  loss = lambda p: jnp.sum((p["w"] - 0.3) ** 2) + jnp.sum(jnp.cos(3 * p["b"]))
  # Compare the explicit K = 1 against the default, step for step.
  for plain, one in (
      (amc_jax.amc(0.1, epsilon=0.1, n_reset=5), amc_jax.amc(0.1, epsilon=0.1, n_reset=5, num_proposals=1)),
      (amc_jax.metropolis(0.2, temperature=0.3), amc_jax.metropolis(0.2, temperature=0.3, num_proposals=1)),
  ):
    trajectories = []
    for tx in (plain, one):
      p, s = params, tx.init(params)
      step = jax.jit(lambda p, s, tx=tx: tx.update(None, s, p, value_fn=loss))
      for _ in range(100):
        u, s = step(p, s)
        p = optax.apply_updates(p, u)
      trajectories.append((p, jax.tree_util.tree_map(
          lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, s)))
    chex.assert_trees_all_equal(trajectories[0], trajectories[1])


@pytest.mark.parametrize("k", [2, 5])
def test_zero_temperature_takes_the_best_of_k_replayed(k):
  """Replay of the documented stream: the lowest of the K losses is taken,
  and accepted iff it does not exceed U(x); sigma, counters and params follow."""
  x = np.linspace(-1.0, 1.0, 6)
  params = {"x": jnp.asarray(x, jnp.float32)}
  loss = lambda p: jnp.sum(jnp.sin(3.0 * p["x"]) + p["x"] ** 2)
  tx = amc_jax.amc(0.3, n_reset=3, num_proposals=k)
  state = tx.init(params)
  # Eager (op by op, like the replay below): under jit XLA may contract
  # mu + sigma * z into one fused multiply-add, an ulp away from the replay.
  step = lambda p, s: tx.update(None, s, p, value_fn=loss)
  current = float(loss(params))
  n_accept = 0
  for i in range(60):
    key, proposal_key, _ = jax.random.split(state.key, 3)
    keys = jax.random.split(proposal_key, k)
    centres = jax.tree_util.tree_map(jnp.zeros_like, params)  # epsilon = 0 keeps none
    assert state.mu == ()
    moves = [amc_jax.proposals.gaussian_move(kk, centres, state.sigma) for kk in keys]
    losses = [float(loss({"x": params["x"] + m["x"]})) for m in moves]
    best = int(np.argmin(losses))
    expect_accept = losses[best] <= current
    sigma_before = float(state.sigma)
    updates, state = step(params, state)
    assert bool(state.info.accepted) == expect_accept, i
    assert float(state.info.proposed_loss) == losses[best]
    if expect_accept:
      np.testing.assert_array_equal(updates["x"], moves[best]["x"])
      current, n_accept = losses[best], n_accept + 1
      assert float(state.sigma) == sigma_before
    else:
      np.testing.assert_array_equal(updates["x"], np.zeros(6, np.float32))
    params = optax.apply_updates(params, updates)
    assert float(state.loss) == current == float(loss(params))
  assert 0 < n_accept < 60
  assert int(state.n_accept) == n_accept


@pytest.mark.parametrize("k", [4, 16])
def test_multiple_try_samples_the_double_well(k):
  """K trials at T = 0.5: E[x], E[x^2], P(x > 0) of the asymmetric double
  well within 5 SE over 4000 independent chains; the naive rule misses."""
  t, m, n_steps = 0.5, 4000, 300
  exact = exact_double_well(t)
  starts = {"x": jax.random.uniform(jax.random.key(3), (m, 1), minval=-2.0, maxval=2.0)}
  final, state = run_chains(metropolis_k(0.6, t, k), double_well, starts, n_steps)
  z = z_scores(final["x"][:, 0], exact)
  assert all(abs(v) < N_SIGMA for v in z.values()), z
  assert 0.05 < float(jnp.mean(state.n_accept)) / n_steps < 0.95

  wrong, _ = run_chains(metropolis_k(0.6, t, k, naive_best_of_k(k)), double_well, starts, n_steps)
  z_wrong = z_scores(wrong["x"][:, 0], exact)
  assert max(abs(v) for v in z_wrong.values()) > 2 * N_SIGMA, z_wrong


@pytest.mark.parametrize("k", [4, 16])
def test_multiple_try_samples_a_gaussian(k):
  """U = |x|^2 / 2 in 3 dimensions at T = 0.7: E[x_i^2] = T per coordinate.

  Starts from N(0, 1.44): with many tries multiple-try Metropolis is slow to
  come down from far out (the references sit around the better point), a
  known property of the method, so the start is moderate and the run long.
  """
  t, m, n_steps = 0.7, 2000, 300
  loss = lambda p: 0.5 * jnp.sum(p["x"] ** 2)
  starts = {"x": 1.2 * jax.random.normal(jax.random.key(4), (m, 3))}
  for try_move, ok in ((None, True), (naive_best_of_k(k), False)):
    final, _ = run_chains(metropolis_k(0.8, t, k, try_move), loss, starts, n_steps)
    x2 = np.asarray(final["x"], np.float64) ** 2
    z = (x2.mean(0) - t) / (x2.std(0, ddof=1) / math.sqrt(m))
    if ok:
      assert np.all(np.abs(z) < N_SIGMA), z
    else:
      assert np.all(z < -2 * N_SIGMA), z  # colder than T


def test_multiple_try_with_an_asymmetric_proposal_uses_its_hastings_ratio():
  """A multiplicative move on x > 0, x' = x exp(s z), with log_ratio =
  log(x'/x): K = 4 tries sample U = x (exponential, mean T) at T = 0.5; with
  log_ratio = 0 the same move samples a different law (mean 0 in the limit
  of a density in log x), which the check rejects."""

  def multiplicative(correct):
    def propose(key, state, params, sigma, scales):
      s = jnp.asarray(sigma).astype(params.dtype)
      factor = jnp.exp(s * jax.random.normal(key, params.shape, params.dtype))
      move = params * factor - params
      log_ratio = jnp.sum(jnp.log(factor)) if correct else 0.0
      return move, log_ratio

    return amc_jax.proposals.Proposal(lambda p: (), propose, lambda s, *_: s)

  t, m = 0.5, 4000
  loss = lambda p: jnp.sum(p)
  starts = jax.random.uniform(jax.random.key(5), (m, 1), minval=0.1, maxval=2.0)
  for correct in (True, False):
    tx = amc_jax.metropolis(0.7, t, proposal=multiplicative(correct), num_proposals=4)
    final, _ = run_chains(tx, loss, starts, 300)
    x = np.asarray(final[:, 0], np.float64)
    z = (x.mean() - t) / (x.std(ddof=1) / math.sqrt(m))
    if correct:
      assert abs(z) < N_SIGMA, z
    else:
      assert abs(z) > 2 * N_SIGMA, z


def test_num_proposals_is_validated_and_works_with_fit():
  with pytest.raises(ValueError, match="num_proposals must be an integer >= 1"):
    amc_jax.amc(0.1, num_proposals=0)
  with pytest.raises(ValueError, match="num_proposals"):
    amc_jax.metropolis(0.1, num_proposals=2.5)
  x = jnp.linspace(0.0, 1.0, 32)[:, None]
  y = jnp.sin(3 * x)
  loss = lambda p, b: jnp.mean((jnp.tanh(b[0] @ p["w"]) @ p["v"] - b[1]) ** 2)
  params = {"w": 0.5 * jnp.ones((1, 8)), "v": 0.1 * jnp.ones((8, 1))}
  one = amc_jax.fit(amc_jax.amc(0.05, num_proposals=1), params, loss, (x, y), steps=300, progress=False)
  many = amc_jax.fit(amc_jax.amc(0.05, num_proposals=8), params, loss, (x, y), steps=300, progress=False)
  assert many.history["loss"][-1] < one.history["loss"][-1]
  # Cached loss is exact: the loss of the final params.
  assert float(amc_jax.monte_carlo_state(many.opt_state).loss) == float(loss(many.params, (x, y)))


def test_num_proposals_is_static_under_inject_hyperparams():
  """The default passes through optax.inject_hyperparams untouched; a K > 1
  is a static argument there, and a traced one is a clear error."""
  loss = lambda p: jnp.sum((p - 1.0) ** 2)
  params = jnp.zeros(3)
  plain = amc_jax.amc(0.1, num_proposals=4)
  injected = optax.inject_hyperparams(amc_jax.amc, static_args=("num_proposals",))(
      sigma0=0.1, num_proposals=4
  )
  out = []
  for tx in (plain, injected):
    p, s = params, tx.init(params)
    step = jax.jit(lambda p, s, tx=tx: tx.update(None, s, p, value_fn=loss))
    for _ in range(20):
      u, s = step(p, s)
      p = optax.apply_updates(p, u)
    out.append(p)
  chex.assert_trees_all_equal(*out)
  traced = optax.inject_hyperparams(amc_jax.amc)(sigma0=0.1, num_proposals=4)
  state = traced.init(params)
  with pytest.raises(TypeError, match="static_args=\\('num_proposals',\\)"):
    jax.jit(lambda p, s: traced.update(None, s, p, value_fn=loss))(params, state)


# --- proposal_batch_size: the K trials b at a time --------------------------------


def _mlp_problem():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(64,)), jnp.float32)

  def loss(p):
    h = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
    return jnp.mean((h @ p["w2"] - y) ** 2)

  params = {"w1": jnp.asarray(0.3 * rng.normal(size=(8, 16)), jnp.float32),
            "b1": jnp.zeros(16, jnp.float32),
            "w2": jnp.asarray(0.3 * rng.normal(size=(16,)), jnp.float32)}
  return params, loss


def _trajectory(tx, params, loss, steps=100):
  @jax.jit
  def go(p, s):
    def body(carry, _):
      p, s = carry
      u, s = tx.update(None, s, p, value_fn=loss)
      return (optax.apply_updates(p, u), s), (s.info.accepted, s.info.proposed_loss)
    return jax.lax.scan(body, (p, s), None, length=steps)

  return go(params, tx.init(params))


@pytest.mark.parametrize("temperature", [0.0, 1e-3])
@pytest.mark.parametrize("k", [2, 5])
def test_proposal_batch_size_gives_the_trials_and_decisions_of_one_vmapped_call(k, temperature):
  """b in {1, 2, K}: the same moves, params and decisions as b = None over 100
  steps (acceptance ~25-40%); the losses XLA computes in a batch of b and of K
  agree to an ulp (a batched matmul may round differently). A wrong variant
  that draws the chosen move again from the first trial's key changes the
  params."""
  params, loss = _mlp_problem()
  make = lambda b: amc_jax.amc(0.05, epsilon=0.1, temperature=temperature, num_proposals=k,
                               proposal_batch_size=b, seed=3)
  (p_ref, s_ref), (acc_ref, prop_ref) = _trajectory(make(None), params, loss)
  assert 10 < int(jnp.sum(acc_ref)) < 90
  for b in sorted({1, 2, k}):
    (p, s), (acc, prop) = _trajectory(make(b), params, loss)
    chex.assert_trees_all_equal(p, p_ref)
    chex.assert_trees_all_equal((s.mu, s.sigma, s.n_reject, s.n_accept, s.count),
                                (s_ref.mu, s_ref.sigma, s_ref.n_reject, s_ref.n_accept, s_ref.count))
    np.testing.assert_array_equal(acc, acc_ref)
    np.testing.assert_allclose(prop, prop_ref, rtol=3e-7)
    np.testing.assert_allclose(s.loss, s_ref.loss, rtol=3e-7)

  original = amc_lib._chosen_move

  def wrong_key(trials, keys, chosen, *rest):
    return original(trials, keys, jnp.zeros_like(chosen), *rest)

  try:
    amc_lib._chosen_move = wrong_key
    (p_wrong, _), _ = _trajectory(make(1), params, loss)
  finally:
    amc_lib._chosen_move = original
  assert not np.array_equal(np.asarray(p_wrong["w1"]), np.asarray(p_ref["w1"]))


def test_multiple_try_one_trial_at_a_time_samples_the_double_well():
  """K = 4 evaluated one at a time (b = 1) at T = 0.5: the same exact law."""
  t, m, n_steps = 0.5, 4000, 300
  exact = exact_double_well(t)
  starts = {"x": jax.random.uniform(jax.random.key(3), (m, 1), minval=-2.0, maxval=2.0)}
  tx = amc_jax.metropolis(0.6, t, num_proposals=4, proposal_batch_size=1)
  final, _ = run_chains(tx, double_well, starts, n_steps)
  z = z_scores(final["x"][:, 0], exact)
  assert all(abs(v) < N_SIGMA for v in z.values()), z


def test_proposal_batch_size_one_bounds_the_step_memory_whatever_k():
  """A params-dominated MLP (1M params, batch 8), compiled: K = 16 trials one
  at a time hold about what K = 4 do one at a time (fwd + ~3.7 P, measured
  on XLA:CPU), where one vmapped call of 16 holds 16 trial points."""
  width = 512
  sizes = [(784, width), (width, width), (width, 10)]
  params = {f"l{i}": jnp.zeros(s, jnp.float32) for i, s in enumerate(sizes)}
  x = jnp.ones((8, 784))

  def loss(p):
    h = x
    for i in range(len(sizes)):
      h = h @ p[f"l{i}"]
      h = jnp.tanh(h) if i + 1 < len(sizes) else h
    return jnp.mean(h**2)

  over = lambda tx: compiled_memory.step_over_forward(tx, params, loss)
  one = over(amc_jax.amc(1e-3, num_proposals=4, proposal_batch_size=1))
  many = over(amc_jax.amc(1e-3, num_proposals=16, proposal_batch_size=1))
  vmapped = over(amc_jax.amc(1e-3, num_proposals=16))
  assert many <= 4.5 and abs(many - one) < 0.5, (one, many)
  assert vmapped > 16, vmapped


def test_proposal_batch_size_is_validated():
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="proposal_batch_size must be None or a static int >= 1"):
      amc_jax.amc(0.1, num_proposals=4, proposal_batch_size=bad)
  with pytest.raises(ValueError, match="proposal_batch_size"):
    amc_jax.metropolis(0.1, num_proposals=4, proposal_batch_size=0)


@pytest.mark.parametrize("temperature", [0.0, 1e-3])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_one_proposal_drawn_again_on_acceptance_is_the_kept_move_bit_for_bit(epsilon, temperature):
  """``proposal_batch_size=1`` with one proposal keeps no move and draws the
  accepted one again from its key: the same params, mu, decisions and losses
  as the step that keeps its move, over 100 steps. Wrong variant: drawing it
  again from another key moves the params elsewhere."""
  params, loss = _mlp_problem()
  make = lambda b: amc_jax.amc(0.05, epsilon=epsilon, temperature=temperature,
                               proposal_batch_size=b, seed=3)
  (p_ref, s_ref), (acc_ref, prop_ref) = _trajectory(make(None), params, loss)
  assert 10 < int(jnp.sum(acc_ref)) < 90
  (p, s), (acc, prop) = _trajectory(make(1), params, loss)
  chex.assert_trees_all_equal(p, p_ref)
  chex.assert_trees_all_equal((s.mu, s.sigma, s.n_reject, s.n_accept, s.count, s.loss),
                              (s_ref.mu, s_ref.sigma, s_ref.n_reject, s_ref.n_accept, s_ref.count,
                               s_ref.loss))
  np.testing.assert_array_equal(acc, acc_ref)
  np.testing.assert_array_equal(prop, prop_ref)

  original = amc_lib.propose

  def wrong_key(key, *rest):
    return original(jax.random.fold_in(key, 1), *rest)

  try:
    amc_lib.propose = wrong_key  # used only by the redraw
    (p_wrong, _), _ = _trajectory(make(1), params, loss)
  finally:
    amc_lib.propose = original
  assert not np.array_equal(np.asarray(p_wrong["w1"]), np.asarray(p_ref["w1"]))

