"""The timed kernels of the speed benchmarks, shared by ``speed/step.py``,
``speed/device.py`` and the profiles: aMC, its floor and Adam in one jitted
``lax.scan``, one table of them per problem, and M vmapped chains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import amc_jax

from benchmarks import _common

SIGMA0, EPSILON, N_RESET = 1e-2, 0.1, 100


def draw(data, key, t, batch_size):
  """The minibatch of step t, exactly as amc_jax.fit draws it."""
  n = jax.tree_util.tree_leaves(data)[0].shape[0]
  idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n)
  return jax.tree_util.tree_map(lambda x: x.at[idx].get(mode="promise_in_bounds"), data)


def scan_amc(tx, loss, n_steps, batch_size=None):
  def run(params, state, data, key):
    def body(carry, t):
      params, state = carry
      batch = data if batch_size is None else draw(data, key, t, batch_size)
      updates, state = tx.update(None, state, params, value_fn=lambda p: loss(p, batch))
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), jnp.arange(n_steps))[0]

  return jax.jit(run)


def floor_proposal(key, params):
  """The floor's move: params + 1e-3 * one flat normal draw, cut into the leaves."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  z = jax.random.normal(key, (sum(x.size for x in leaves),))
  out, offset = [], 0
  for x in leaves:
    out.append(x + 1e-3 * z[offset : offset + x.size].reshape(x.shape))
    offset += x.size
  return jax.tree_util.tree_unflatten(treedef, out)


def scan_floor(loss, n_steps, batch_size=None):
  """The least any Monte Carlo step of this mode must do, in plain JAX."""

  def run(params, carry, data, key):
    def body(carry, t):
      params, rng, current = carry
      rng, sub = jax.random.split(rng)
      proposal = floor_proposal(sub, params)
      if batch_size is None:
        proposed = loss(proposal, data)
      else:
        batch = draw(data, key, t, batch_size)
        current = loss(params, batch)
        proposed = loss(proposal, batch)
      accept = proposed <= current
      params = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), proposal, params)
      return (params, rng, jnp.where(accept, proposed, current)), None

    return jax.lax.scan(body, (params,) + carry, jnp.arange(n_steps))[0]

  return jax.jit(run)


def scan_adam(tx, loss, n_steps, batch_size=None):
  def run(params, state, data, key):
    def body(carry, t):
      params, state = carry
      batch = data if batch_size is None else draw(data, key, t, batch_size)
      _, grads = jax.value_and_grad(loss)(params, batch)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), jnp.arange(n_steps))[0]

  return jax.jit(run)


def time_interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds of each zero-argument fn (see _common.interleaved_times)."""
  return _common.interleaved_times(fns, repeats)[0]


ROW_AMC = "amc_jax.amc in lax.scan"
ROW_FLOOR = "floor (plain JAX)"
ROW_ADAM = "optax.adam + value_and_grad"
ROW_FIT = "amc_jax.fit"
ROW_TORCH = "PyTorch reference (authors' aMC)"


def bench_problem(problem, n_steps, repeats, batch_size=None, torch_dir=None):
  """One table: us per step of every row, and the ratios to the floor."""
  params, loss, data = problem.params, problem.loss, problem.data
  key = jax.random.key(1)
  tx = amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET, minibatch=batch_size is not None)
  amc_fn = scan_amc(tx, loss, n_steps, batch_size)
  # Past the first step's extra evaluation, with params and state that belong
  # together (the state caches the loss of its params).
  amc_params, state = amc_fn(params, tx.init(params), data, key)
  floor_fn = scan_floor(loss, n_steps, batch_size)
  floor_carry = (jax.random.key(0), loss(params, data if batch_size is None else draw(data, key, 0, batch_size)))
  adam = optax.adam(1e-3)
  adam_fn = scan_adam(adam, loss, n_steps, batch_size)
  adam_state = adam.init(params)
  fit_tx = amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET)
  fit = lambda: amc_jax.fit(
      fit_tx, params, loss, data, steps=n_steps, batch_size=batch_size, sequential=False,
      chunk=n_steps,
      log_every=n_steps, progress=False,
  ).params
  rows = {
      ROW_AMC: lambda: amc_fn(amc_params, state, data, key),
      ROW_FLOOR: lambda: floor_fn(params, floor_carry, data, key),
      ROW_ADAM: lambda: adam_fn(params, adam_state, data, key),
      ROW_FIT: fit,
  }
  seconds = time_interleaved(rows, repeats)
  per_step = {k: v / n_steps * 1e6 for k, v in seconds.items()}
  torch_note = None
  if torch_dir is not False:
    try:
      from benchmarks import _torch_reference  # pylint: disable=g-import-not-at-top
    except ImportError as e:  # pragma: no cover
      ok, torch_note = False, f"benchmarks/_torch_reference.py not importable: {e}"
    else:
      ok, torch_note = _torch_reference.available(torch_dir)
    if ok:
      torch_steps = max(1, min(n_steps, 2000 if problem.name == "sine" else n_steps))
      result = _torch_reference.time_per_step(
          problem.torch_problem, problem.numpy_data, steps=torch_steps, repeats=repeats,
          amc_dir=torch_dir, minibatch=batch_size, sigma0=SIGMA0, epsilon=EPSILON,
          n_reset=N_RESET,
      )
      per_step[ROW_TORCH] = result["seconds_per_step"] * 1e6
      torch_note = {k: v for k, v in result.items() if k != "all_runs"}
  floor = per_step[ROW_FLOOR]
  return {
      "problem": problem.description,
      "mode": "batch" if batch_size is None else f"minibatch {batch_size}",
      "steps_per_scan": n_steps,
      "us_per_step": per_step,
      "ratio_to_floor": {k: v / floor for k, v in per_step.items()},
      "adam_over_amc": per_step[ROW_ADAM] / per_step[ROW_AMC],
      "torch_over_amc": per_step[ROW_TORCH] / per_step[ROW_AMC] if ROW_TORCH in per_step else None,
      "torch": torch_note,
  }


def vmapped_scan(tx, value, params, m, n_steps):
  """A timer of ``n_steps`` vmapped steps of M chains in one jitted scan.

  The chains start from ``params`` (broadcast) with :func:`amc_jax.init_ensemble`
  keys; the timer starts past the first step's extra evaluation.
  """
  batch_params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (m,) + x.shape), params)
  state = amc_jax.init_ensemble(tx, batch_params, jax.random.key(0))
  step = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=value))

  @jax.jit
  def run(p, s):
    def body(carry, _):
      p, s = carry
      u, s = step(p, s)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(body, (p, s), None, length=n_steps)[0]

  batch_params, state = run(batch_params, state)
  jax.block_until_ready(batch_params)
  return lambda: run(batch_params, state)


def vmapped_floor(value, params, m, n_steps):
  """A timer of the floor of an M-chain step: per chain one normal draw, one
  loss evaluation, compare, select (the single-chain floor, vmapped), in one
  jitted scan like :func:`vmapped_scan`."""

  def one(params, key, current):
    key, sub = jax.random.split(key)
    proposal = floor_proposal(sub, params)
    proposed = value(proposal)
    accept = proposed <= current
    params = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), proposal, params)
    return params, key, jnp.where(accept, proposed, current)

  step = jax.vmap(one)
  batch = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (m,) + x.shape), params)
  keys = jax.random.split(jax.random.key(0), m)
  current = jax.vmap(value)(batch)

  @jax.jit
  def run(p, k, c):
    def body(carry, _):
      return step(*carry), None

    return jax.lax.scan(body, (p, k, c), None, length=n_steps)[0]

  jax.block_until_ready(run(batch, keys, current))
  return lambda: run(batch, keys, current)
