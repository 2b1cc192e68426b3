"""Time per step of aMC against its floor and against Adam, side by side.

The floor of a batch-mode Monte Carlo step is one loss evaluation plus the
random numbers and the select that any Metropolis step needs; it is written
here as plain JAX in the same ``lax.scan`` as the amc_jax step. Adam pays a
forward and a backward pass. Every row is a median over repeats after a
warm-up, all rows measured in the same run.

  python benchmarks/bench_step.py [--steps 20000] [--repeats 7] [--out FILE]

Prints a table and writes JSON (with the machine described) to
``benchmarks/results/bench_step.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

import amc_jax

import _common  # benchmarks/_common.py, beside this script

HIDDEN, N_POINTS = 30, 1000


def sine_problem():
  theta = jnp.arange(N_POINTS, dtype=jnp.float32) / N_POINTS
  target = jnp.sin(2 * jnp.pi * theta)
  keys = jax.random.split(jax.random.key(0), 3)
  params = {k: 0.1 * jax.random.normal(kk, (HIDDEN,)) for k, kk in zip("wba", keys)}

  def loss(p):
    f = jnp.tanh(theta[:, None] * p["w"][None, :] + p["b"][None, :]) @ p["a"]
    return jnp.mean((f - target) ** 2)

  return params, loss


def scan_amc(tx, loss, n_steps):
  def run(params, state):
    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=loss)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), None, length=n_steps)[0]

  return jax.jit(run)


def scan_floor(loss, n_steps):
  """One normal draw, one loss evaluation, compare, select: nothing else."""

  def run(params, carry):
    def body(carry, _):
      params, key, current = carry
      key, sub = jax.random.split(key)
      leaves, treedef = jax.tree_util.tree_flatten(params)
      z = jax.random.normal(sub, (sum(x.size for x in leaves),))
      out, offset = [], 0
      for x in leaves:
        out.append(x + 1e-3 * z[offset : offset + x.size].reshape(x.shape))
        offset += x.size
      proposal = jax.tree_util.tree_unflatten(treedef, out)
      proposed = loss(proposal)
      accept = proposed <= current
      params = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), proposal, params)
      return (params, key, jnp.where(accept, proposed, current)), None

    return jax.lax.scan(body, (params,) + carry, None, length=n_steps)[0]

  return jax.jit(run)


def scan_adam(loss, n_steps):
  tx = optax.adam(1e-3)

  def run(params, state):
    def body(carry, _):
      params, state = carry
      _, grads = jax.value_and_grad(loss)(params)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), None, length=n_steps)[0]

  return jax.jit(run), tx


def median_seconds(fn, args, repeats):
  jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=20_000)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument(
      "--out", default=str(pathlib.Path(__file__).parent / "results" / "bench_step.json")
  )
  args = parser.parse_args(argv)
  amc_jax.use_xla_cpu_workaround()  # before the first computation

  params, loss = sine_problem()
  n = args.steps
  tx = amc_jax.amc(1e-2, epsilon=0.1, n_reset=100)
  amc_fn = scan_amc(tx, loss, n)
  state = tx.init(params)
  jax.block_until_ready(amc_fn(params, state))  # the first step evaluates U(x)
  state = amc_fn(params, state)[1]
  floor_fn = scan_floor(loss, n)
  adam_fn, adam_tx = scan_adam(loss, n)
  rows = {
      "amc_jax.amc (batch mode)": median_seconds(amc_fn, (params, state), args.repeats),
      "floor (plain JAX)": median_seconds(
          floor_fn, (params, (jax.random.key(0), loss(params))), args.repeats
      ),
      "optax.adam + value_and_grad": median_seconds(
          adam_fn, (params, adam_tx.init(params)), args.repeats
      ),
  }
  per_step = {k: v / n * 1e6 for k, v in rows.items()}
  floor = per_step["floor (plain JAX)"]
  print(f"sine net 1-{HIDDEN}-1, {N_POINTS} points, {n} steps per scan, median of {args.repeats}")
  print(f"{'method':32s} {'us/step':>9s} {'/ floor':>8s}")
  for k, v in per_step.items():
    print(f"{k:32s} {v:9.2f} {v / floor:8.2f}")
  result = {
      "command": "python benchmarks/bench_step.py " + " ".join(argv or sys.argv[1:]),
      "problem": f"sine net 1-{HIDDEN}-1 tanh, {N_POINTS} points, batch mode, float32",
      "steps_per_scan": n,
      "repeats": args.repeats,
      "us_per_step": per_step,
      "ratio_to_floor": {k: v / floor for k, v in per_step.items()},
  }
  _common.write_json(args.out, result)
  return result


if __name__ == "__main__":
  main()
