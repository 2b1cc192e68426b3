"""Compiled memory of a donated Monte Carlo step, in copies of the params
(shared by test_compiled.py and test_multiple_try.py)."""

import jax
import optax


def compiled_total(fn, *args, donate=()):
  """argument + output + temp - alias bytes of ``jax.jit(fn)`` compiled for ``args``."""
  m = jax.jit(fn, donate_argnums=donate).lower(*args).compile().memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def step_over_forward(tx, params, loss):
  """(compiled step memory - compiled loss memory) / P: tx.update +
  optax.apply_updates with params and state donated, as fit runs it."""
  def step(p, s):
    u, s = tx.update(None, s, p, value_fn=loss)
    return optax.apply_updates(p, u), s

  p_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
  fwd = compiled_total(loss, params)
  return (compiled_total(step, params, tx.init(params), donate=(0, 1)) - fwd) / p_bytes
