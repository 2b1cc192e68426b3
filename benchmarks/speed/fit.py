"""Per-step cost of ``amc_jax.fit`` against a bare ``lax.scan`` of ``tx.update``.

Every row is a median over repeats after a warm-up (so compilation is
excluded: fit keeps its compiled chunks between calls); the repeats of the rows
of a table are interleaved, so they share the load of a shared machine:

1. Batch mode: the paper's sine net (1-30-1 tanh, 1000 points). The bare scan
   is one jitted ``lax.scan`` of ``tx.update`` + ``optax.apply_updates`` over
   all steps; ``fit`` runs the same steps in chunks of ``--chunk`` with its
   history, between-chunk host work and (silenced) progress.
2. Minibatches: the same net on ``--n-large`` points, minibatches of
   ``--batch`` drawn on device every step. The bare scan draws them the same
   way (``randint`` + gather) and passes ``value=``, as fit does.
3. Ensembles: M chains vmapped through one ``fit`` against M separate
   single-chain fits (measured for M <= ``--measure-separate``, else M times
   the single-chain time), on the 1000-point problem (compute-bound on a CPU:
   vmap cannot shrink the arithmetic, only the per-step overhead) and on a
   ``--small-points`` version of it, where the per-step overhead dominates.

  python -m benchmarks.speed.fit [--steps 20000] [--repeats 7] [--out FILE]

Prints the tables and writes JSON (with the machine described) to
``benchmarks/out/bench_fit.json`` (git-ignored) unless ``--out`` says otherwise;
``--out benchmarks/results/bench_fit.json`` replaces the committed result.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import optax

import amc_jax

from benchmarks import _common

HIDDEN, N_POINTS = 30, 1000


def sine_data(n):
  theta = jnp.arange(n, dtype=jnp.float32) / n
  return theta, jnp.sin(2 * jnp.pi * theta)


def init_params(key):
  keys = jax.random.split(key, 3)
  return {k: 0.1 * jax.random.normal(kk, (HIDDEN,)) for k, kk in zip("wba", keys)}


def loss_fn(params, batch):
  theta, target = batch
  f = jnp.tanh(theta[:, None] * params["w"][None, :] + params["b"][None, :]) @ params["a"]
  return jnp.mean((f - target) ** 2)


def bare_scan(tx, n_steps, batch_size=None, cached_value=False):
  """One jitted lax.scan of tx.update: the floor that fit is measured against.

  ``cached_value=True`` passes the state's loss as ``value=`` in batch mode,
  as fit does (the state's loss must then be U(x) at the start).
  """

  def run(params, state, data, key):
    def body(carry, t):
      params, state = carry
      if batch_size is None:
        value_fn = lambda p: loss_fn(p, data)
        extra = {"value": state.loss} if cached_value else {}
      else:
        n = data[0].shape[0]
        idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n)
        batch = jax.tree_util.tree_map(lambda x: x.at[idx].get(mode="promise_in_bounds"), data)
        value_fn = lambda p: loss_fn(p, batch)
        extra = {"value": value_fn(params)}
      updates, state = tx.update(None, state, params, value_fn=value_fn, **extra)
      return (optax.apply_updates(params, updates), state), None

    steps = jnp.arange(n_steps, dtype=jnp.int32)
    return jax.lax.scan(body, (params, state), steps)[0]

  return jax.jit(run)


def median_seconds(fns, repeats):
  """Median wall time of each callable (see _common.interleaved_times)."""
  return _common.interleaved_times(fns, repeats)[0]


def compare_fit_and_scan(tx, params, data, steps, chunk, repeats, batch_size=None):
  state = tx.init(params)
  key = jax.random.key(0)
  scan = bare_scan(tx, steps, batch_size)
  # Plain minibatches: the step the bare scan runs (not the sequential test).
  kw = dict(steps=steps, batch_size=batch_size, sequential=False, progress=False)
  fns = {"bare lax.scan (1 dispatch)": lambda: scan(params, state, data, key)}
  if batch_size is None:
    # The step fit runs in batch mode: the cached U(x) passed as value=.
    cached = bare_scan(tx, steps, cached_value=True)
    rebased = state._replace(loss=loss_fn(params, data))
    fns["bare lax.scan, value=cached U(x)"] = lambda: cached(params, rebased, data, key)
  chunk = min(chunk, steps)
  fns[f"fit, chunk={chunk}"] = (
      lambda: amc_jax.fit(tx, params, loss_fn, data, chunk=chunk, **kw).params
  )
  fns[f"fit, chunk={steps} (1 dispatch)"] = (
      lambda: amc_jax.fit(tx, params, loss_fn, data, chunk=steps, **kw).params
  )
  return {k: v / steps * 1e6 for k, v in median_seconds(fns, repeats).items()}


def ensembles(tx, data, steps, chunk, repeats, sizes, measure_separate):
  kw = dict(steps=steps, chunk=chunk, progress=False)
  out = {}
  for m in sizes:
    params = jax.vmap(init_params)(jax.random.split(jax.random.key(1), m))
    fns = {
        "ensemble": lambda: amc_jax.fit(tx, params, loss_fn, data, n_chains=m, **kw).params,
        "single": lambda: amc_jax.fit(
            tx, amc_jax.select_chain(params, 0), loss_fn, data, **kw
        ).params,
    }
    if m <= measure_separate:
      fns["separate"] = lambda: [
          amc_jax.fit(tx, amc_jax.select_chain(params, k), loss_fn, data, **kw).params
          for k in range(m)
      ]
    t = median_seconds(fns, repeats)
    t_sep, how = (t["separate"], "measured") if "separate" in t else (
        m * t["single"], "M x single")
    out[m] = {
        "ensemble_us_per_step": t["ensemble"] / steps * 1e6,
        "separate_us_per_step": t_sep / steps * 1e6,
        "separate_how": how,
        "single_us_per_step": t["single"] / steps * 1e6,
        "us_per_chain_step": t["ensemble"] / steps / m * 1e6,
        "speedup": t_sep / t["ensemble"],
    }
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=20_000)
  parser.add_argument("--chunk", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--n-large", type=int, default=100_000)
  parser.add_argument("--batch", type=int, default=1000)
  parser.add_argument("--ensemble-steps", type=int, default=2000)
  parser.add_argument("--ensemble-sizes", type=int, nargs="+", default=[1, 10, 100])
  parser.add_argument("--small-points", type=int, default=32)
  parser.add_argument("--measure-separate", type=int, default=10,
                      help="measure M separate fits up to this M, else M x single")
  parser.add_argument(
      "--out", default=str(_common.OUT / "bench_fit.json")
  )
  args = parser.parse_args(argv)
  amc_jax.use_xla_cpu_workaround()  # before the first computation
  argv = sys.argv[1:] if argv is None else argv
  load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

  tx = amc_jax.amc(1e-2, epsilon=0.1, n_reset=100)
  params = init_params(jax.random.key(0))
  batch_rows = compare_fit_and_scan(
      tx, params, sine_data(N_POINTS), args.steps, args.chunk, args.repeats
  )
  minibatch_rows = compare_fit_and_scan(
      tx, params, sine_data(args.n_large), args.steps, args.chunk, args.repeats,
      batch_size=args.batch,
  )
  ens_chunk = min(args.chunk, args.ensemble_steps)
  ens = {
      points: ensembles(
          tx, sine_data(points), args.ensemble_steps, ens_chunk, args.repeats,
          args.ensemble_sizes, args.measure_separate,
      )
      for points in (N_POINTS, args.small_points)
  }

  def table(title, rows):
    floor = next(iter(rows.values()))
    print(title)
    print(f"  {'loop':36s} {'us/step':>9s} {'/ bare':>8s}")
    for k, v in rows.items():
      print(f"  {k:36s} {v:9.2f} {v / floor:8.3f}")

  print(f"sine net 1-{HIDDEN}-1 tanh, aMC (sigma0=1e-2, epsilon=0.1, n_reset=100),"
        f" {args.steps} steps, median of {args.repeats}")
  table(f"batch mode, {N_POINTS} points:", batch_rows)
  table(f"minibatches of {args.batch} from {args.n_large} points:", minibatch_rows)
  for points, by_m in ens.items():
    print(f"ensembles, batch mode, {points} points, {args.ensemble_steps} steps, chunk"
          f" {ens_chunk} (time per step of all M chains):")
    print(f"  {'M':>4s} {'1 fit, M chains':>16s} {'M separate fits':>16s} {'':12s}"
          f" {'us/chain-step':>14s} {'speedup':>8s}")
    for m, r in by_m.items():
      print(f"  {m:4d} {r['ensemble_us_per_step']:13.1f} us {r['separate_us_per_step']:13.1f} us"
            f" {'(' + r['separate_how'] + ')':12s} {r['us_per_chain_step']:14.2f}"
            f" {r['speedup']:7.1f}x")

  result = {
      "command": "python -m benchmarks.speed.fit " + " ".join(argv),
      "problem": f"sine net 1-{HIDDEN}-1 tanh, float32, aMC(1e-2, epsilon=0.1, n_reset=100)",
      "steps": args.steps,
      "chunk": args.chunk,
      "repeats": args.repeats,
      "batch_mode": {
          "points": N_POINTS,
          "us_per_step": batch_rows,
          "ratio_to_bare_scan": {k: v / next(iter(batch_rows.values()))
                                 for k, v in batch_rows.items()},
      },
      "minibatch": {
          "points": args.n_large,
          "batch_size": args.batch,
          "us_per_step": minibatch_rows,
          "ratio_to_bare_scan": {k: v / next(iter(minibatch_rows.values()))
                                 for k, v in minibatch_rows.items()},
      },
      "ensembles": {
          "steps": args.ensemble_steps,
          "chunk": ens_chunk,
          "by_points_then_chains": {str(p): {str(m): r for m, r in by_m.items()}
                                    for p, by_m in ens.items()},
      },
      "load_average_before": list(load_before) if load_before else None,
  }
  _common.write_json(args.out, result)
  return result


if __name__ == "__main__":
  main()
