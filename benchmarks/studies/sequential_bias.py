"""The bias of the sequential acceptance test at T > 0, on a Gaussian.

U(x) = mean_i (x - y_i)^2 / 2 over N = 1000 fixed y_i ~ N(0, 1), so exp(-U/T)
is a Gaussian of mean mean(y) and variance T (T = 0.01). ``metropolis(0.2,
temperature=T, sequential=SequentialTest(N, 100, confidence))``, 64 chains of
3000 steps (the first 500 dropped), vmapped; error bars from the spread of
the chains. Confidence 1 reads every example: the exact full-batch chain.

    python -m benchmarks.studies.sequential_bias [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from benchmarks import _common

N, CHUNK, T, CHAINS, STEPS, BURN = 1000, 100, 0.01, 64, 3000, 500


def measure(confidence, chains=CHAINS, steps=STEPS, burn=BURN):
  import jax
  import jax.numpy as jnp
  import optax
  import amc_jax

  y = jnp.asarray(np.random.default_rng(5).normal(size=N), jnp.float32)

  def chunk(x, c):
    return 0.5 * (x[0] - jax.lax.dynamic_slice_in_dim(y, c * CHUNK, CHUNK)) ** 2

  def chain(seed):
    tx = amc_jax.metropolis(0.2, temperature=T, seed=seed,
                            sequential=amc_jax.SequentialTest(N, CHUNK, confidence))
    x0 = jnp.full((1,), jnp.mean(y))

    def body(carry, _):
      x, state = carry
      updates, state = tx.update(None, state, x, chunk_fn=chunk)
      x = optax.apply_updates(x, updates)
      return (x, state), (x[0], state.sequential.used)

    _, (xs, used) = jax.lax.scan(body, (x0, tx.init(x0)), None, length=steps)
    return xs[burn:], used[burn:]

  xs, used = jax.jit(jax.vmap(chain))(jnp.arange(chains))
  means, variances = jnp.mean(xs, axis=1), jnp.var(xs, axis=1)
  root = np.sqrt(chains)
  return {
      "confidence": confidence,
      "mean_minus_target": float(jnp.mean(means) - jnp.mean(y)),
      "mean_se": float(jnp.std(means) / root),
      "variance_over_T": float(jnp.mean(variances) / T),
      "variance_over_T_se": float(jnp.std(variances) / T / root),
      "examples_per_step": float(jnp.mean(used)),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--confidences", type=float, nargs="+", default=[0.9, 0.95, 0.99, 1.0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out-dir", type=pathlib.Path, default=_common.ROOT / "benchmarks" / "out")
  args = parser.parse_args(argv)
  import amc_jax
  amc_jax.use_xla_cpu_workaround()
  kw = dict(chains=4, steps=200, burn=50) if args.quick else {}
  rows = []
  for c in args.confidences:
    r = measure(c, **kw)
    rows.append(r)
    print(f"confidence {c}: mean - mean(y) = {r['mean_minus_target']:+.4f} +- {r['mean_se']:.4f};"
          f" variance / T = {r['variance_over_T']:.3f} +- {r['variance_over_T_se']:.3f};"
          f" examples read per step {r['examples_per_step']:.0f} of {N}", flush=True)
  _common.write_json(args.out_dir / "sequential_bias.json",
                     {"command": _common.command(), "rows": rows,
                      "setting": {"N": N, "chunk": CHUNK, "T": T, "chains": kw.get("chains", CHAINS),
                                  "steps": kw.get("steps", STEPS), "burn": kw.get("burn", BURN)}})
  return rows


if __name__ == "__main__":
  main()
