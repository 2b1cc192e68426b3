"""The ask / ``vmap(loss)`` / tell loop of evosax's strategies and the
log-spaced, timed rows that the evosax and parallel-methods studies run it in.
"""

from __future__ import annotations

import time

import jax
import numpy as np


def row_ends(total, rows):
  """Log-spaced step (generation) counts from 1 to ``total``, unique, ending at ``total``."""
  return [int(e) for e in np.unique(np.round(np.geomspace(1, total, max(rows, 2))))]


def evosax_method(es, es_params, loss, params):
  def body(_, carry):
    state, key = carry
    key, k_ask, k_tell = jax.random.split(key, 3)
    population, state = es.ask(k_ask, state, es_params)
    fitness = jax.vmap(loss)(population)  # evosax minimises
    state, _ = es.tell(k_tell, population, fitness, state, es_params)
    return state, key

  advance = jax.jit(lambda carry, n: jax.lax.fori_loop(0, n, body, carry))
  mean_loss = jax.jit(lambda carry: loss(es.get_mean(carry[0])))
  keys = lambda seed: jax.random.split(jax.random.key(seed))
  return {
      "init": lambda seed: (es.init(keys(seed)[0], params, es_params), keys(seed)[1]),
      "advance": advance,
      "best": lambda carry: carry[0].best_fitness,
      "std": lambda carry: carry[0].std,
      "mean_loss": mean_loss,
  }


def timed_rows(advance, carry, ends):
  """Advances ``carry`` to each step count in ``ends``; yields ``(carry, seconds)``
  after each, seconds being the blocked wall time of the ``advance`` calls so far."""
  done, elapsed = 0, 0.0
  for end in ends:
    t0 = time.perf_counter()
    carry = jax.block_until_ready(advance(carry, end - done))
    elapsed += time.perf_counter() - t0
    done = end
    yield carry, elapsed
