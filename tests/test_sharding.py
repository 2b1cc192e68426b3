"""Many devices: sharded runs equal the one-device run.

JAX fixes its device count when the backend starts, so the 4-device runs
happen in a subprocess (tests/sharding_worker.py) started with
``--xla_force_host_platform_device_count=4``; the one-device references are
computed here, in the test process, from the same problem definitions.
"""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

import amc_jax

sys.path.insert(0, os.path.dirname(__file__))
import sharding_worker as worker  # noqa: E402

_FLAGS = "--xla_force_host_platform_device_count=4 --xla_cpu_experimental_ynn_fusion_type=-reduce"
# Unit roundoff of float32.
_U = float(np.finfo(np.float32).eps) / 2


def _env(xla_flags):
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags
  return env


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
  """The worker's report and arrays, from a 4-device subprocess."""
  out = tmp_path_factory.mktemp("sharding") / "out.npz"
  proc = subprocess.run(
      [sys.executable, "-W", "error", worker.__file__, str(out)],
      capture_output=True,
      text=True,
      env=_env(_FLAGS),
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  with np.load(out) as z:
    arrays = {k: z[k] for k in z.files if k != "report"}
    report = json.loads(str(z["report"]))
  assert report["devices"] == 4
  return report, arrays


def _select(arrays, prefix):
  return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


# (a) Chains over devices.


@pytest.fixture(scope="module")
def chains_reference():
  """The same 50 steps, jax.vmap on one device, unsharded."""
  tx, params, state = worker.chain_problem()
  return worker.flatten(worker.chain_run(tx, jax.vmap)(params, state), "")


@pytest.mark.parametrize("mapper", ["ensemble_map", "vmap"])
def test_sharded_chains_equal_one_device_bitwise(sharded, chains_reference, mapper):
  # Chains never mix, and a chain's arithmetic does not depend on which device
  # or how many neighbours it runs with, so every bit must agree: params,
  # keys, mu, sigma, losses, counters and the 50 steps' accept decisions.
  _, arrays = sharded
  got = _select(arrays, f"{mapper}/")
  assert got.keys() == chains_reference.keys()
  for name, want in chains_reference.items():
    np.testing.assert_array_equal(got[name], want, err_msg=name)
  accepted = chains_reference["[1]"]  # [step, chain]
  assert 0 < accepted.mean() < 1  # the test sees both outcomes


def test_sharded_chains_stay_on_their_devices(sharded):
  report, _ = sharded
  two_each = [[2]] * 4
  assert report["chains/input_layout"] == [["P('chains',)", two_each]]
  for mapper in ("ensemble_map", "vmap"):
    # Final params and state: 2 chains per device; the scanned history of
    # accept decisions, [step, chain]: sharded over its chain axis.
    assert report[f"{mapper}/layout"] == [
        ["P('chains',)", two_each],
        ["P(None, 'chains')", [[50]] * 4],
    ]


def test_ensemble_map_compiles_without_communication(sharded):
  # The whole 50-step program, HLO after SPMD partitioning: no collective of
  # any kind. (Plain jax.jit(jax.vmap(step)) has all-reduces: vmap batches the
  # step's while-loop predicates into an `any` over all chains.)
  report, _ = sharded
  assert report["ensemble_map/collectives"] == []


# (a') Replica exchange and populations: replicas over devices.


@pytest.mark.parametrize("name", ["replica_exchange", "population", "population_annealing"])
def test_sharded_replicas_equal_one_device(sharded, name):
  """The wrappers of amc_jax.replicas with their replicas over 4 devices:
  the same params, states and counters as on one device, bit for bit (each
  replica's arithmetic is its own; the swap, cloning and resampling read the
  same losses), and the params stay sharded over the replicas."""
  _, arrays = sharded
  tx, params, state = worker.replica_problems()[name]
  want = worker.flatten(worker.replica_run(tx)(params, state), "")
  got = _select(arrays, f"{name}/")
  assert got.keys() == want.keys()
  for key, value in want.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
  report, _ = sharded
  assert report[f"{name}/params_layout"] == [["P('chains',)", [[2]] * 4]]


# (b) One chain, data-parallel.


@pytest.fixture(scope="module")
def data_reference():
  tx, params, state, data = worker.data_problem()
  flat = worker.flatten(worker.data_run(tx)(params, state, data), "")
  loss0 = float(worker.data_loss(params, data))
  return flat, loss0


_EXACT = [
    "[0][0]['b1']", "[0][0]['w1']", "[0][0]['w2']",
    "[0][1].key", "[0][1].mu['b1']", "[0][1].mu['w1']", "[0][1].mu['w2']",
    "[0][1].sigma", "[0][1].n_reject", "[0][1].count", "[0][1].n_accept",
    "[0][1].info.accepted", "[0][1].info.reset",
    "[1][0]",  # the accept decision of every step
]
_LOSSES = ["[0][1].loss", "[0][1].info.proposed_loss", "[1][1]", "[1][2]"]


@pytest.mark.parametrize("variant", ["data", "pmean"])
def test_data_parallel_chain_equals_one_device(sharded, data_reference, variant):
  """Same decisions and params; losses equal up to the summation order.

  A mean over 512 examples sharded 4 ways sums in another order than on one
  device, so losses may differ in the last bits (measured: 1.7e-7 relative).
  For n non-negative terms, any summation order is within (n - 1) u of the
  exact sum, relatively, so the two runs' losses differ by at most
  2 (n - 1) u ~ 6e-5 relatively. At T = 0 a decision is U' <= U, so it can
  only differ between the runs if |U' - U| is within that band; the test
  checks that no step of the reference comes that close (the closest is
  ~5e-3), which makes equal decisions a consequence rather than luck. Equal
  decisions and the same key give the same moves, hence bit-equal params.
  """
  _, arrays = sharded
  want, loss0 = data_reference
  got = _select(arrays, f"{variant}/")
  band = 2 * (worker.N_EXAMPLES - 1) * _U

  current = np.concatenate([[loss0], want["[1][2]"][:-1]])  # U before each step
  proposed = want["[1][1]"]
  gap = np.abs(proposed - current) / np.maximum(proposed, current)
  assert gap.min() > 10 * band, gap.min()

  for name in _EXACT:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  for name in _LOSSES:
    np.testing.assert_allclose(got[name], want[name], rtol=band, atol=0, err_msg=name)
  assert 0 < want["[1][0]"].mean() < 1  # both outcomes occur


def test_data_parallel_layout(sharded):
  report, _ = sharded
  # 128 examples per device in, replicated params and state out.
  assert report["data/input_layout"] == [["P('data',)", [[128]] * 4]]
  assert {spec for spec, _ in report["data/layout"]} == {"P()"}
  # The loss's cross-device sum is an all-reduce of partial sums; the batch
  # itself is never gathered.
  assert "all-reduce" in report["data/collectives"]
  assert "all-gather" not in report["data/collectives"]


# (c) Errors.


def test_errors_that_need_several_devices(sharded):
  report, _ = sharded
  uneven = "6 chains cannot be split evenly over the 4 devices of mesh axis 'chains'; use a multiple of 4 chains."
  assert report["error/shard_ensemble"] == "ValueError: " + uneven
  assert report["error/ensemble_map"] == "ValueError: " + uneven
  assert report["error/shard_batch"] == (
      "ValueError: 510 examples cannot be split evenly over the 4 devices of"
      " mesh axis 'data'; use a multiple of 4 examples."
  )
  assert "mesh axis 'chains' is of type AxisType.Explicit" in report["error/explicit"]
  # The NaN guard still fires for a chain on device 2 of 4.
  assert "the loss of the current params is nan" in report["error/nan"]


def test_mesh_errors_on_one_device():
  tx, params, state = worker.chain_problem()
  mesh = amc_jax.device_mesh("chains")
  with pytest.raises(ValueError, match=r"mesh has no axis 'data'; its axes are \('chains',\)"):
    amc_jax.shard_batch({"x": jnp.zeros(4)}, mesh)
  with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
    amc_jax.shard_ensemble(params, state, "chains")
  explicit = jax.make_mesh((1,), ("chains",), axis_types=(AxisType.Explicit,))
  with pytest.raises(ValueError, match=r"AxisType.Auto"):
    amc_jax.shard_ensemble(params, state, explicit)
  fewer = jax.tree.map(lambda x: x[:4], params)
  with pytest.raises(ValueError, match="params have 4 chains but the state has 8"):
    amc_jax.shard_ensemble(fewer, state, mesh)
  with pytest.raises(ValueError, match="the leaf \\['x'\\] is a scalar"):
    amc_jax.shard_batch({"x": jnp.zeros(())}, amc_jax.device_mesh("data"))
  with pytest.raises(ValueError, match=r"same leading axis size; got sizes \[3, 4\]"):
    amc_jax.shard_batch({"x": jnp.zeros(4), "y": jnp.zeros(3)}, amc_jax.device_mesh("data"))
  with pytest.raises(ValueError, match="in_axes entries must be 0 or None, got 1"):
    amc_jax.ensemble_map(lambda p: p, mesh, in_axes=1)
  with pytest.raises(ValueError, match="in_axes=None maps nothing"):
    amc_jax.ensemble_map(lambda p: p, mesh, in_axes=None)
  with pytest.raises(ValueError, match="in_axes has 2 entries but the function was called with 1"):
    amc_jax.ensemble_map(lambda p: p, mesh, in_axes=(0, None))(params)
  with pytest.raises(TypeError, match="process_local must be a bool"):
    amc_jax.shard_batch({"x": jnp.zeros(4)}, mesh, "chains", process_local=1)


def test_ensemble_map_shares_unmapped_arguments():
  # in_axes=(0, None): one copy of x for all chains, as for a shared batch.
  mesh = amc_jax.device_mesh("chains")
  params = {"w": jnp.arange(8.0).reshape(4, 2)}
  fn = lambda p, x: jnp.sum(p["w"]) * x  # noqa: E731
  out = jax.jit(amc_jax.ensemble_map(fn, mesh, in_axes=(0, None)))(params, jnp.ones(3))
  np.testing.assert_array_equal(out, np.repeat([[1.0], [5.0], [9.0], [13.0]], 3, axis=1))


# The example: one process with 4 devices (run by the worker), and two
# processes over localhost.


def _summary(stdout):
  """The example's result lines, without timings."""
  lines = [line.rsplit(" (", 1)[0] for line in stdout.splitlines()]
  return [line for line in lines if line.startswith(("chains over", "data-parallel"))]


@pytest.fixture(scope="module")
def example_one_process(sharded):
  """The example's output, run by the worker on its 4 devices."""
  report, _ = sharded
  return report["example/stdout"]


def test_example_runs_on_four_fake_devices(example_one_process):
  lines = example_one_process.splitlines()
  assert "4 devices in 1 process(es), 8 chains, 100 steps" in lines
  summary = _summary(example_one_process)
  assert len(summary) == 2, example_one_process
  # Both runs start at the "learned nothing" loss 1/2 and go down.
  for line in summary:
    start, end = re.search(r"loss (\S+) -> (?:median )?([^,\s]+)", line).groups()
    assert float(start) == pytest.approx(0.5, abs=0.01)
    assert float(end) < float(start)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_example_two_processes_match_one(example_one_process):
  """jax.distributed over localhost: 2 processes x 2 CPU devices.

  The same 4-device mesh as the one-process run, now spanning two processes
  that talk through JAX's distributed runtime (gloo collectives on CPU), as
  separate hosts would.
  """
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  address = f"127.0.0.1:{_free_port()}"
  procs = [
      subprocess.Popen(
          [sys.executable, "-W", "error", "-m", "amc_jax.examples.sharded",
           "--cpu-devices", "2", *worker.EXAMPLE_ARGS, "--coordinator", address,
           "--num-processes", "2", "--process-id", str(i)],
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
      )
      for i in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-5000:]
  stdout = outputs[0][0]
  assert "4 devices in 2 process(es), 8 chains, 100 steps" in stdout.splitlines()
  assert _summary(stdout) == _summary(example_one_process)
  assert _summary(outputs[1][0]) == []  # only process 0 prints
