"""The cost of signal norm per aMC step (on / off / lambdas fixed to 1), shared
by ``studies/signal_norm.py`` and ``speed/device.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import amc_jax

from benchmarks import _common
from benchmarks._problems import mse, numpy_loss

SIGMA0, EPSILON, N_RESET = 1e-2, 1e-2, 100


def scan_amc(tx, value_fn, n_steps):
  """Jitted lax.scan of tx.update; the data are arguments, never constants."""

  def run(params, state, x, y):
    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=lambda p: value_fn(p, x, y))
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), None, length=n_steps)[0]

  return jax.jit(run)


def median_seconds(fns, repeats):
  """(medians, samples) of each callable (see _common.interleaved_times)."""
  return _common.interleaved_times(fns, repeats)


def cost_of(model, x, y, n_steps, repeats, softmax):
  """us/step of aMC with signal norm on and off on one model and data set."""
  params = model.init(jax.random.key(0), x[:1])["params"]
  plain = lambda p, x, y: mse(model.apply({"params": p}, x), y)
  variants = {
      "on": (amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=True, seed=0),
             amc_jax.signal_norm_value_fn(model, mse)),
      "off": (amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=False, seed=0), plain),
      # Diagnostic: the signal-norm step with lambdas fixed to 1, i.e. the
      # step's own extra work (scales in the state, the scaled move) without
      # the statistics of Eq. (17).
      "on, lambdas = 1": (
          amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=True, seed=0),
          lambda p, x, y: (plain(p, x, y), jax.tree_util.tree_map(jnp.ones_like, p)),
      ),
  }
  fns, runs = {}, {}
  for name, (tx, value_fn) in variants.items():
    run = scan_amc(tx, value_fn, n_steps)
    # The first step evaluates U(x) too: time from a state past it.
    start = run(params, tx.init(params), x, y)
    runs[name] = (run, start)
    fns[name] = lambda run=run, start=start: run(*start, x, y)
  medians, samples = median_seconds(fns, repeats)
  us = {k: v / n_steps * 1e6 for k, v in medians.items()}
  # The minimum is the least load-sensitive figure on a busy machine.
  us_min = {k: min(v) / n_steps * 1e6 for k, v in samples.items()}
  check = {}
  for name, (run, start) in runs.items():
    p, state = run(*start, x, y)
    ref = numpy_loss(p, x, y, softmax)
    check[name] = {
        "cached_loss": float(state.loss),
        "numpy_float64_loss": ref,
        "rel_err": abs(float(state.loss) - ref) / max(abs(ref), 1e-30),
        "accepted_fraction": float(state.n_accept) / float(state.count),
    }
  return {
      "n_params": int(sum(v.size for v in jax.tree_util.tree_leaves(params))),
      "steps_per_scan": n_steps,
      "us_per_step": us,
      "ratio_on_off": us["on"] / us["off"],
      "ratio_on_lambdas_1_off": us["on, lambdas = 1"] / us["off"],
      "min_us_per_step": us_min,
      "ratio_on_off_of_minima": us_min["on"] / us_min["off"],
      "samples_s": samples,
      "loss_check": check,
  }
