"""The multi-device half of tests/test_sharding.py.

JAX fixes the number of CPU devices when its backend starts, so the sharded
runs happen in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``:

  python tests/sharding_worker.py OUT.npz

writes the sharded runs' results (and, as JSON under the key ``"report"``,
the HLO collectives, output shardings, error messages and the output of
``python -m amc_jax.examples.sharded``) to ``OUT.npz``. The test module imports the problem definitions below and
computes the one-device references in its own process.
"""

import contextlib
import io
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import amc_jax
from amc_jax.examples import sharded

N_CHAINS = 8
N_EXAMPLES = 512
N_STEPS = 50
EXAMPLE_ARGS = ["--steps", "100", "--seed", "0"]
_COLLECTIVE = re.compile(
    r"\b(all-reduce|all-gather|all-to-all|reduce-scatter|collective-permute"
    r"|collective-broadcast|send|recv)(-start)?\("
)


# Inputs come from NumPy: every eager JAX op is one more compilation, and
# compilations dominate this file's run time.

# (a) Chains: 8 independent chains fit a small tanh net to a fixed curve.
_X = np.linspace(-1.0, 1.0, 32, dtype=np.float32)
_Y = np.sin(3.0 * _X)


def chain_loss(p):
  hidden = jnp.tanh(p["w"][None, :] * _X[:, None] + p["b"][None, :])
  return jnp.mean((hidden @ p["a"] - _Y) ** 2)


def chain_problem():
  """(tx, params, state) of the ensemble, every leaf with a chain axis."""
  tx = amc_jax.amc(0.1, epsilon=0.1, n_reset=5, temperature=1e-3)
  rng = np.random.default_rng(1)
  params = {k: rng.normal(0.0, 0.5, (N_CHAINS, 8)).astype(np.float32) for k in "wba"}
  return tx, params, amc_jax.init_ensemble(tx, params, 2)


def chain_run(tx, mapper):
  """Jitted 50-step scan; ``mapper`` vmaps the per-chain step."""

  def one(p, s):
    updates, s = tx.update(None, s, p, value_fn=chain_loss)
    return optax.apply_updates(p, updates), s

  step = mapper(one)

  @jax.jit
  def run(params, state):
    def body(carry, _):
      params, state = step(*carry)
      return (params, state), state.info.accepted

    return lax.scan(body, (params, state), None, length=N_STEPS)

  return run


# (b) One chain, data-parallel: a 4-16-1 tanh net on 512 examples.
def data_problem():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(N_EXAMPLES, 4)).astype(np.float32)
  y = np.sin(x @ np.array([1.0, -2.0, 0.5, 0.3], np.float32))
  params = {
      "w1": rng.normal(0.0, 0.5, (4, 16)).astype(np.float32),
      "b1": np.zeros(16, np.float32),
      "w2": rng.normal(0.0, 0.5, 16).astype(np.float32),
  }
  tx = amc_jax.amc(0.05, epsilon=0.1, n_reset=10)
  return tx, params, tx.init(params), {"x": x, "y": y}


def data_loss(p, data):
  hidden = jnp.tanh(data["x"] @ p["w1"] + p["b1"][None, :])
  return jnp.mean((hidden @ p["w2"] - data["y"]) ** 2)


def data_run(tx, loss=data_loss):
  @jax.jit
  def run(params, state, data):
    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=lambda q: loss(q, data))
      params = optax.apply_updates(params, updates)
      return (params, state), (state.info.accepted, state.info.proposed_loss, state.loss)

    return lax.scan(body, (params, state), None, length=N_STEPS)

  return run


# (c) Replicas: replica exchange and a population, 8 replicas over 4 devices.
def replica_problems():
  """{name: (tx, params, state)} for the wrappers of amc_jax.replicas."""
  rng = np.random.default_rng(5)
  params = {k: rng.normal(0.0, 0.5, (N_CHAINS, 8)).astype(np.float32) for k in "wba"}
  ladder = tuple(np.geomspace(1e-3, 1.0, N_CHAINS).tolist())
  txs = {
      "replica_exchange": amc_jax.replica_exchange(amc_jax.metropolis(0.05), ladder, seed=1),
      "population": amc_jax.population(amc_jax.amc(0.1, epsilon=0.1), every=10, seed=2),
      "population_annealing": amc_jax.population_annealing(
          amc_jax.metropolis(0.05), ladder[::-1], steps_per_temperature=6, seed=3
      ),
  }
  return {name: (tx, params, tx.init(params)) for name, tx in txs.items()}


def replica_run(tx):
  @jax.jit
  def run(params, state):
    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=chain_loss)
      return (optax.apply_updates(params, updates), state), None

    return lax.scan(body, (params, state), None, length=N_STEPS)[0]

  return run


def flatten(tree, prefix):
  """``{prefix/keypath: ndarray}``, typed keys as their raw key data."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
  return out


def _run(jitted, *args):
  """Compiles once; returns the outputs and the program's collectives."""
  compiled = jitted.lower(*args).compile()
  ops = sorted(m.group(1) for m in _COLLECTIVE.finditer(compiled.as_text()))
  return compiled(*args), ops


def _layout(tree):
  """Partition spec and per-device leading sizes of every leaf."""
  return sorted(
      {(str(x.sharding.spec), tuple(s.data.shape[:1] for s in x.addressable_shards))
       for x in jax.tree_util.tree_leaves(tree)}
  )


def _error(fn):
  try:
    jax.block_until_ready(fn())
  except Exception as e:  # noqa: BLE001 -- the message is what is tested
    return f"{type(e).__name__}: {e}"
  return "no error"


def main(out_path):
  jax.config.update("jax_numpy_dtype_promotion", "strict")
  jax.config.update("jax_numpy_rank_promotion", "raise")
  report = {"devices": jax.device_count()}
  arrays = {}

  # (a) Chains over 4 devices, 2 per device.
  tx, params, state = chain_problem()
  mesh = amc_jax.device_mesh("chains")
  params, state = amc_jax.shard_ensemble(params, state, mesh)
  for name, mapper in [
      ("ensemble_map", lambda f: amc_jax.ensemble_map(f, mesh)),
      ("vmap", jax.vmap),
  ]:
    out, report[f"{name}/collectives"] = _run(chain_run(tx, mapper), params, state)
    arrays.update(flatten(out, f"{name}/"))
    report[f"{name}/layout"] = _layout(out)
  report["chains/input_layout"] = _layout((params, state))

  # (b) One chain, the batch over 4 devices.
  tx, params, state, data = data_problem()
  dmesh = amc_jax.device_mesh("data")
  params, state = amc_jax.replicate((params, state), dmesh)
  data = amc_jax.shard_batch(data, dmesh)
  out, report["data/collectives"] = _run(data_run(tx), params, state, data)
  arrays.update(flatten(out, "data/"))
  report["data/layout"] = _layout(out[0])
  report["data/input_layout"] = _layout(data)
  # The same with the collective written out: shard_map and pmean.
  pmean_loss = lambda p, d: lax.pmean(data_loss(p, d), "data")  # noqa: E731
  explicit = jax.jit(
      jax.shard_map(
          data_run(tx, pmean_loss),
          mesh=dmesh,
          in_specs=(P(), P(), P("data")),
          out_specs=P(),
          check_vma=False,
      )
  )
  arrays.update(flatten(explicit(params, state, data), "pmean/"))

  # (c) Replica wrappers, replicas over 4 devices.
  for name, (tx, params, state) in replica_problems().items():
    placed = amc_jax.shard_replicas(params, state, mesh)
    out, report[f"{name}/collectives"] = _run(replica_run(tx), *placed)
    arrays.update(flatten(out, f"{name}/"))
    report[f"{name}/params_layout"] = _layout(out[0])

  # (d) Errors that need several devices.
  tx, params6, _ = chain_problem()
  params6 = jax.tree.map(lambda x: x[:6], params6)
  state6 = amc_jax.init_ensemble(tx, params6, jax.random.key(0))
  report["error/shard_ensemble"] = _error(lambda: amc_jax.shard_ensemble(params6, state6, mesh))
  step = amc_jax.ensemble_map(lambda p, s: tx.update(None, s, p, value_fn=chain_loss), mesh)
  report["error/ensemble_map"] = _error(lambda: jax.jit(step)(params6, state6))
  odd = {"x": jnp.zeros((510, 4))}
  report["error/shard_batch"] = _error(lambda: amc_jax.shard_batch(odd, dmesh))
  # The NaN guard still raises when the bad chain sits on another device.
  tx, params, state = chain_problem()
  bad = {name: leaf.copy() for name, leaf in params.items()}
  bad["w"][5] = np.nan  # chain 5 lives on device 2
  step = jax.jit(amc_jax.ensemble_map(lambda p, s: tx.update(None, s, p, value_fn=chain_loss), mesh))
  report["error/nan"] = _error(lambda: step(*amc_jax.shard_ensemble(bad, state, mesh)))
  explicit_mesh = jax.make_mesh((4,), ("chains",), axis_types=(AxisType.Explicit,))
  report["error/explicit"] = _error(lambda: amc_jax.ensemble_map(chain_loss, explicit_mesh))

  # The example, in this process's 4 devices (its --cpu-devices and
  # multi-process flags are exercised by the two-process test).
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    sharded.main(EXAMPLE_ARGS)
  report["example/stdout"] = stdout.getvalue()

  np.savez(out_path, report=json.dumps(report), **arrays)


if __name__ == "__main__":
  main(sys.argv[1])
