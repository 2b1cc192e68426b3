"""Structural facts of the compiled step: what XLA fuses, what it keeps."""

import os
import re
import sys

import jax
import jax.numpy as jnp
import optax
import pytest

import amc_jax

sys.path.insert(0, os.path.dirname(__file__))
import compiled_memory  # noqa: E402

N_DATA, HIDDEN = 1000, 30  # shapes that no params leaf has
THETA = jnp.arange(N_DATA, dtype=jnp.float32) / N_DATA
TARGET = jnp.sin(2 * jnp.pi * THETA)
PARAMS = {k: 0.1 * jax.random.normal(jax.random.key(i), (HIDDEN,)) for i, k in enumerate("wba")}


def broadcast_loss(p):
  # The sine net written with broadcasting: the form where XLA fused the
  # move's draw into the [data x units] fusion and recomputed it per point.
  h = jnp.tanh(THETA[:, None] * p["w"][None, :] + p["b"][None, :])
  return jnp.mean((jnp.sum(h * p["a"][None, :], axis=1) - TARGET) ** 2)


def vmap_loss(p):
  f = jax.vmap(lambda x: jnp.sum(p["a"] * jnp.tanh(x * p["w"] + p["b"])))(THETA)
  return jnp.mean((f - TARGET) ** 2)


def draws_inside_data_fusions(tx, loss) -> list[str]:
  """Names of the fused computations of the optimized HLO that compute the
  normal draw (erf_inv) and touch a data-sized shape."""

  def step(params, state):
    updates, state = tx.update(None, state, params, value_fn=loss)
    return optax.apply_updates(params, updates), state

  text = jax.jit(step).lower(PARAMS, tx.init(PARAMS)).compile().as_text()
  found = []
  for block in text.split("\n\n"):
    header = block.splitlines()[0] if block.strip() else ""
    if not header.lstrip("%").startswith("fused_computation"):
      continue
    if "erf_inv" in block and re.search(rf"\[{N_DATA}[,\]]", block):
      found.append(header.split()[0])
  return found


@pytest.mark.parametrize("loss", [broadcast_loss, vmap_loss], ids=["broadcast", "vmap"])
@pytest.mark.parametrize(
    "tx",
    [amc_jax.metropolis(1e-2, temperature=1e-3), amc_jax.amc(1e-2), amc_jax.amc(1e-2, epsilon=0.1)],
    ids=["metropolis_hot", "amc_eps0", "amc_eps0.1"],
)
def test_the_move_is_drawn_once_not_inside_the_losss_data_fusions(tx, loss):
  assert draws_inside_data_fusions(tx, loss) == []


def test_without_materialising_the_move_the_draw_is_fused_into_the_data(monkeypatch):
  # The deliberately wrong variant: the move and the trial point handed on as
  # they are, from one flat draw (the step before this was fixed).
  from amc_jax._src import proposals as proposals_lib

  from amc_jax._src import base

  monkeypatch.setattr(base, "materialised", lambda tree, flag: tree)
  monkeypatch.setattr(proposals_lib, "_leafwise_ok", lambda *args: False)
  assert draws_inside_data_fusions(amc_jax.metropolis(1e-2, temperature=1e-3), broadcast_loss)


def test_epsilon_zero_keeps_no_params_sized_state():
  for tx in (amc_jax.amc(1e-2), amc_jax.metropolis(1e-2), amc_jax.amc(1e-2, epsilon=0.0)):
    state = tx.init(PARAMS)
    assert state.mu == ()
    sizes = [x.size for x in jax.tree_util.tree_leaves(state)]
    assert max(sizes) == 1, sizes  # scalars and the key only
  state = amc_jax.amc(1e-2, epsilon=0.1).init(PARAMS)
  assert jax.tree_util.tree_structure(state.mu) == jax.tree_util.tree_structure(PARAMS)


def test_fit_donates_params_and_state_to_its_chunks():
  # The compiled chunk aliases its params and state outputs to their inputs:
  # a chunk holds one copy of them, not two; the caller's arrays stay valid.
  from amc_jax._src import chunks as chunks_lib

  tx = amc_jax.amc(1e-2)
  before = chunks_lib.run_chunk._cache_size()
  result = amc_jax.fit(tx, PARAMS, broadcast_loss, steps=20, chunk=10, progress=False)
  assert chunks_lib.run_chunk._cache_size() == before + 1
  spec = chunks_lib.Spec(tx=chunks_lib.Ref(tx), loss_fn=chunks_lib.Ref(broadcast_loss), mode="none",
                       batch_size=0, monte_carlo=True, extra_args=True, ensemble=False)
  ts = jnp.zeros((1, 10), jnp.int32)
  compiled = chunks_lib.run_chunk.lower(
      PARAMS, result.opt_state, None, jax.random.key(0), ts, spec=spec
  ).compile()
  params_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(PARAMS))
  assert compiled.memory_analysis().alias_size_in_bytes >= params_bytes
  assert float(jnp.sum(PARAMS["w"])) == float(jnp.sum(PARAMS["w"]))  # still readable


def _mid_size_mlp(width=1024):
  sizes = [(784, width), (width, width), (width, width), (width, 10)]
  params = {f"l{i}": {"w": jnp.zeros(s, jnp.float32), "b": jnp.zeros(s[1], jnp.float32)}
            for i, s in enumerate(sizes)}
  x, y = jnp.ones((8, 784)), jnp.zeros((8, 10))

  def loss(p):
    h = x
    for i in range(len(sizes)):
      h = h @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"][None, :]
      h = jnp.tanh(h) if i + 1 < len(sizes) else h
    return jnp.mean((h - y) ** 2)

  return params, loss


def test_a_step_holds_the_forward_pass_and_two_copies_of_the_params(monkeypatch):
  """A params-dominated MLP (2.9M params, batch 8), compiled on XLA:CPU:
  metropolis and amc at epsilon 0 hold at most fwd + 2.0 P (the trial point
  and the move); epsilon != 0 one more P, mu (updated in place, outside the
  accept/reject cond). The wrong variant, each
  leaf's normals drawn in one piece (JAX's CPU threefry is a rolled loop
  whose word arrays are as large as the draw), holds fwd + 2.7 P."""
  from amc_jax._src import proposals as proposals_lib

  params, loss = _mid_size_mlp()
  for tx in (amc_jax.metropolis(1e-3), amc_jax.amc(1e-3),
             amc_jax.metropolis(1e-3, temperature=1e-3)):
    assert compiled_memory.step_over_forward(tx, params, loss) <= 2.05
  assert compiled_memory.step_over_forward(amc_jax.amc(1e-3, epsilon=0.1), params, loss) <= 3.05
  monkeypatch.setattr(proposals_lib, "_BLOCK", 1 << 40)
  assert compiled_memory.step_over_forward(amc_jax.amc(1e-3), params, loss) > 2.5


def test_a_step_that_draws_its_move_again_holds_the_paper_s_two_versions_of_the_model():
  """``proposal_batch_size=1`` with one trial: the step holds the params and
  the trial point, "two versions of the model" (Section III), and no move:
  fwd + 1.37 P on this 2.9M-param MLP (the 0.37 P is the largest leaf's
  normals and one block's threefry words); epsilon != 0 one
  more P (mu). The one-chain step evaluates U(x) on its first step in a
  cond; the wrong variant, the while loop that vmapped chains use, holds a
  params-sized copy (XLA puts the params in the loop's tuple): fwd + 2.0 P."""
  from amc_jax._src import amc as amc_lib

  params, loss = _mid_size_mlp()
  for tx in (amc_jax.metropolis(1e-3, proposal_batch_size=1),
             amc_jax.metropolis(1e-3, temperature=1e-3, proposal_batch_size=1)):
    assert compiled_memory.step_over_forward(tx, params, loss) <= 1.45
  tx = amc_jax.amc(1e-3, epsilon=0.1, proposal_batch_size=1)
  assert compiled_memory.step_over_forward(tx, params, loss) <= 2.45

  def loop_always(value_fn, params, state, signal_norm):
    evaluate = lambda p, consts: amc_lib.evaluate(value_fn, p, signal_norm, "value_fn(params)")
    return amc_lib._first_evaluation_loop(evaluate, params, state.count, state.loss,
                                          state.scales, [])

  with pytest.MonkeyPatch.context() as m:
    m.setattr(amc_lib, "_first_evaluation", loop_always)
    tx = amc_jax.metropolis(1e-3, proposal_batch_size=1)
    assert compiled_memory.step_over_forward(tx, params, loss) > 1.9


def test_signal_norm_holds_at_most_one_more_copy_of_the_params_its_cached_lambdas():
  """Signal norm (Eq. 18) on a flax nn.Dense MLP (2.9M params, batch 8): the
  step holds at most one P more than without it, the cached lambdas; the
  trial's lambdas are selected into the donated state outside the
  accept/reject cond (measured: + 0.005 P here, + 1.0 P at width 4096; the
  lambdas chosen by the cond held one P more at both). Wrong variant: the
  state not donated, so that the select cannot write into it: + 2 P."""
  import flax.linen as nn
  import optax

  model = nn.Sequential([nn.Dense(1024), nn.tanh, nn.Dense(1024), nn.tanh, nn.Dense(1024),
                         nn.tanh, nn.Dense(10)])
  x, y = jnp.ones((8, 784)), jnp.zeros((8, 10))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
  params = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  mse = lambda out, y: jnp.mean((out - y) ** 2)
  value_fn = amc_jax.signal_norm_value_fn(model, mse)
  plain = lambda p: mse(model.apply({"params": p}, x), y)
  with_lambdas = lambda p: value_fn(p, x, y)
  for eps in (0.0, 0.1):
    extra = (compiled_memory.step_over_forward(
        amc_jax.amc(1e-3, epsilon=eps, signal_norm=True), params, with_lambdas)
             - compiled_memory.step_over_forward(amc_jax.amc(1e-3, epsilon=eps), params, plain))
    assert extra <= 1.05, (eps, extra)

  tx = amc_jax.amc(1e-3, signal_norm=True)

  def step(p, s):
    u, s = tx.update(None, s, p, value_fn=with_lambdas)
    return optax.apply_updates(p, u), s

  p_bytes = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(params))
  fwd = compiled_memory.compiled_total(plain, params)
  kept = (compiled_memory.compiled_total(step, params, tx.init(params), donate=(0,)) - fwd)
  assert kept / p_bytes > 3.5
