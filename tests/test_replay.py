"""Exact replay of Section III against an independent NumPy implementation.

The NumPy code below is written from the paper's steps 1-4 only; it shares no
code with amc_jax. It is fed the same random draws: the documented key
schedule of :func:`amc_jax.amc` (split the key into next/proposal/acceptance;
standard normals ``jax.random.normal(proposal_key, (N,))`` over the leaves in
``tree_leaves`` order; ``u = jax.random.uniform(acceptance_key, ())``).
Everything runs in float64, so both sides make the same accept/reject
decisions and agree on sigma, mu, the counters and the params to rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax

N_STEPS = 300


def loss_np(x):
  """A non-convex polynomial loss over the flat parameter vector (NumPy)."""
  t = np.arange(x.size, dtype=np.float64) / x.size
  return float(np.sum((x - t) ** 2) + 0.5 * np.sum(x[:-1] ** 2 * x[1:] ** 2))


def loss_jax(params):
  """The same loss on the params pytree (JAX), flattened in leaf order."""
  x = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(params)])
  t = jnp.arange(x.size, dtype=jnp.float64) / x.size
  return jnp.sum((x - t) ** 2) + 0.5 * jnp.sum(x[:-1] ** 2 * x[1:] ** 2)


def draws(key, n, n_steps):
  """The random numbers amc_jax consumes, by its documented key schedule."""
  zs, us = [], []
  for _ in range(n_steps):
    key, k_prop, k_acc = jax.random.split(key, 3)
    zs.append(np.asarray(jax.random.normal(k_prop, (n,), jnp.float64)))
    us.append(float(jax.random.uniform(k_acc, (), jnp.float64)))
  return zs, us


def replay_numpy(x0, zs, us, *, sigma0, epsilon, n_reset, decay, temperature, lam):
  """Section III, steps 1-4, in plain NumPy. Returns the history of the state."""
  x = x0.copy()
  mu = np.zeros_like(x)
  sigma, n_cr, n_acc = sigma0, 0, 0
  u_x = loss_np(x)  # batch learning: U(x) is known from the previous step
  history = []
  for step, (z, u) in enumerate(zip(zs, us)):
    t = temperature(step)
    eps = mu + (sigma * lam) * z  # Eq. (9): eps_i ~ N(mu_i, (lambda_i sigma)^2)
    x_new = x + eps
    u_new = loss_np(x_new)
    d_u = u_new - u_x
    accept = np.isfinite(u_new) and (d_u <= 0 or (t > 0 and np.log(u) < -d_u / t))
    if accept:  # step 3
      x, u_x = x_new, u_new
      n_cr = 0
      mu = mu + epsilon * (eps - mu)  # Eq. (10)
      n_acc += 1
    else:  # step 4
      n_cr += 1
      if n_cr == n_reset:
        n_cr, sigma = 0, decay * sigma
        mu = np.zeros_like(mu)
    history.append((x.copy(), mu.copy(), sigma, n_cr, n_acc, u_x))
  return history


def flat(tree):
  return np.concatenate([np.ravel(np.asarray(l)) for l in jax.tree_util.tree_leaves(tree)])


CASES = {
    "metropolis-like eps=0": dict(epsilon=0.0, temperature=0.0, scaled=False),
    "aMC eps=0.1": dict(epsilon=0.1, temperature=0.0, scaled=False),
    "aMC eps=0.1 with scales": dict(epsilon=0.1, temperature=0.0, scaled=True),
    "aMC eps=0.1 at T=1e-3": dict(epsilon=0.1, temperature=1e-3, scaled=False),
    "aMC annealed": dict(epsilon=0.1, temperature="schedule", scaled=False),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_exact_replay_against_numpy(x64, case):
  cfg = CASES[case]
  sigma0, n_reset, decay = 0.05, 5, 0.9
  if cfg["temperature"] == "schedule":
    schedule = optax.exponential_decay(1e-2, transition_steps=30, decay_rate=0.5)
    temperature, t_np = schedule, lambda s: float(schedule(s))
  else:
    temperature, t_np = cfg["temperature"], (lambda s, t=cfg["temperature"]: t)

  params = {
      "a": jnp.array([0.3, -0.2, 0.5], jnp.float64),
      "b": jnp.array([[0.1, 0.4], [-0.3, 0.2]], jnp.float64),
  }
  scales = (
      {"a": jnp.array([1.0, 0.5, 2.0]), "b": jnp.array(0.25)}
      if cfg["scaled"]
      else None
  )
  lam = (
      np.concatenate([[1.0, 0.5, 2.0], [0.25] * 4]) if cfg["scaled"] else np.ones(7)
  )
  key = jax.random.key(42)
  tx = amc_jax.amc(
      sigma0, cfg["epsilon"], n_reset, decay, temperature, seed=key
  )
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(None, state, params, value_fn=loss_jax, scales=scales)
    return optax.apply_updates(params, updates), state

  zs, us = draws(key, 7, N_STEPS)
  expected = replay_numpy(
      flat(params), zs, us, sigma0=sigma0, epsilon=cfg["epsilon"], n_reset=n_reset,
      decay=decay, temperature=t_np, lam=lam,
  )
  n_resets = 0
  for i, (x, mu, sigma, n_cr, n_acc, u_x) in enumerate(expected):
    params, state = step(params, state)
    np.testing.assert_allclose(flat(params), x, rtol=1e-12, atol=1e-15, err_msg=f"step {i}")
    if cfg["epsilon"] == 0:
      # epsilon = 0 keeps no centres: they are identically zero.
      assert state.mu == () and not np.any(mu), f"step {i}"
    else:
      np.testing.assert_allclose(flat(state.mu), mu, rtol=1e-12, atol=1e-15, err_msg=f"step {i}")
    np.testing.assert_allclose(float(state.sigma), sigma, rtol=1e-14, err_msg=f"step {i}")
    np.testing.assert_allclose(float(state.loss), u_x, rtol=1e-12, err_msg=f"step {i}")
    assert int(state.n_reject) == n_cr, f"step {i}"
    assert int(state.n_accept) == n_acc, f"step {i}"
    n_resets += bool(state.info.reset)
  assert int(state.count) == N_STEPS
  # The replay only means something if every branch of the algorithm ran.
  assert 0 < expected[-1][4] < N_STEPS
  assert n_resets >= 3 and expected[-1][2] < sigma0
