"""aMC on many devices: chains sharded over devices, and one data-parallel chain.

Two runs on the sine problem of :mod:`amc_jax.examples.sine` (a 30-unit tanh
net learns sin(2 pi theta)), on a one-axis mesh over all devices:

1. **Chains over devices**: an ensemble of independent aMC chains (by default
   2 per device), placed with :func:`amc_jax.shard_ensemble` and stepped with
   :func:`amc_jax.ensemble_map`: each device runs its own chains, with no
   communication.
2. **One chain, data-parallel**: the 1024 training points split over the
   devices with :func:`amc_jax.shard_batch`, params and state replicated with
   :func:`amc_jax.replicate`; the loss's mean becomes an all-reduce, and every
   device makes the same proposal and the same decision.

One machine, 4 simulated CPU devices::

  python -m amc_jax.examples.sharded --cpu-devices 4

Several hosts: the same command on every host, with its own process id
(``jax.distributed.initialize`` connects them; the mesh then spans every
host's devices, and each host loads only its block of the training points)::

  python -m amc_jax.examples.sharded --coordinator host0:1234 --num-processes 2 --process-id $i

Run ``python -m amc_jax.examples.sharded --help`` for the options.
"""

import time
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

import amc_jax
from amc_jax.examples import _cli
from amc_jax.examples import sine

# A power of two, so that the points split evenly over 1, 2, 4, 8, ... devices.
N_POINTS = 1024
DEFAULT_STEPS = 2_000
DEFAULT_CHAINS_PER_DEVICE = 2


class ShardedResult(NamedTuple):
  """What :func:`run` returns (NumPy values, the same on every process).

  Attributes:
    n_devices: number of devices in the mesh (of all processes).
    chain_losses: final loss of every chain of run 1, shape ``[n_chains]``.
    chain_initial_losses: their initial losses.
    data_loss: final loss of the data-parallel chain of run 2.
    data_initial_loss: its initial loss.
    data_acceptance: acceptance rate of run 2.
    seconds: wall time of the two compiled runs, compilation excluded.
  """

  n_devices: int
  chain_losses: np.ndarray
  chain_initial_losses: np.ndarray
  data_loss: float
  data_initial_loss: float
  data_acceptance: float
  seconds: tuple[float, float]


def _fetch(x: jax.Array) -> np.ndarray:
  """A global array as NumPy on every process."""
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _loss(params: sine.Params, data: dict[str, jax.Array]) -> jax.Array:
  return jnp.mean((sine.predict(params, data["theta"]) - data["target"]) ** 2)


def _timed(program, *args):
  compiled = jax.jit(program).lower(*args).compile()
  start = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  return out, time.perf_counter() - start


def run(
    steps: int = DEFAULT_STEPS,
    *,
    n_chains: Optional[int] = None,
    seed: int = 0,
    sigma0: float = sine.DEFAULT_SIGMA0,
    epsilon: float = sine.DEFAULT_EPSILON,
) -> ShardedResult:
  """Runs both layouts for ``steps`` aMC steps on all of ``jax.devices()``.

  Args:
    steps: aMC steps of each run.
    n_chains: chains of run 1, a multiple of the device count; default 2 per
      device.
    seed: seeds the initial params and the chains.
    sigma0: initial step size of aMC.
    epsilon: rate at which the proposal centres follow accepted moves.

  Returns:
    A :class:`ShardedResult`.

  Examples:
    >>> result = run(steps=50)
    >>> bool(np.all(result.chain_losses <= result.chain_initial_losses))
    True
  """
  n_devices = jax.device_count()
  n_chains = DEFAULT_CHAINS_PER_DEVICE * n_devices if n_chains is None else n_chains
  tx = amc_jax.amc(sigma0, epsilon=epsilon, n_reset=sine.DEFAULT_N_RESET)
  theta, target = (np.asarray(a) for a in sine.make_data(N_POINTS))
  init_key, chain_key = jax.random.split(jax.random.key(seed))

  # 1. Chains over devices. Every process builds the whole ensemble (it is
  # small and deterministic); shard_ensemble keeps each process's chains.
  chains_mesh = amc_jax.device_mesh("chains")
  keys = jax.random.split(init_key, n_chains)
  params = jax.vmap(sine.init_params)(keys)
  state = amc_jax.init_ensemble(tx, params, chain_key)
  params, state = amc_jax.shard_ensemble(params, state, chains_mesh)
  data = {"theta": theta, "target": target}  # replicated: every chain sees all

  def one_chain(params, state):
    updates, state = tx.update(None, state, params, value_fn=lambda p: _loss(p, data))
    return optax.apply_updates(params, updates), state

  step = amc_jax.ensemble_map(one_chain, chains_mesh)

  def chains_program(params, state):
    loss0 = amc_jax.ensemble_map(lambda p: _loss(p, data), chains_mesh)(params)
    body = lambda carry, _: (step(*carry), None)  # noqa: E731
    (params, state), _ = jax.lax.scan(body, (params, state), None, length=steps)
    return loss0, state.loss

  (chain_loss0, chain_loss), chain_seconds = _timed(chains_program, params, state)

  # 2. One chain, data-parallel: each process loads only its own block of the
  # points (here cut from the full set, as a real loader would read a shard).
  data_mesh = amc_jax.device_mesh("data")
  rows = np.array_split(np.arange(N_POINTS), jax.process_count())[jax.process_index()]
  local = {"theta": theta[rows], "target": target[rows]}
  data = amc_jax.shard_batch(local, data_mesh, process_local=True)
  tx = amc_jax.amc(sigma0, epsilon=epsilon, n_reset=sine.DEFAULT_N_RESET, seed=chain_key)
  params = sine.init_params(init_key)
  params, state = amc_jax.replicate((params, tx.init(params)), data_mesh)

  def data_program(params, state, data):
    loss = lambda p: _loss(p, data)  # noqa: E731

    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=loss)
      return (optax.apply_updates(params, updates), state), None

    loss0 = loss(params)
    (params, state), _ = jax.lax.scan(body, (params, state), None, length=steps)
    return loss0, state

  (data_loss0, state), data_seconds = _timed(data_program, params, state, data)
  return ShardedResult(
      n_devices=n_devices,
      chain_losses=_fetch(chain_loss),
      chain_initial_losses=_fetch(chain_loss0),
      data_loss=float(_fetch(state.loss)),
      data_initial_loss=float(_fetch(data_loss0)),
      data_acceptance=float(_fetch(state.n_accept)) / steps,
      seconds=(chain_seconds, data_seconds),
  )


def main(argv: Optional[Sequence[str]] = None) -> ShardedResult:
  """Command-line entry point: sets up the devices, runs, prints a summary."""
  parser = _cli.parser("amc_jax.examples.sharded", __doc__, DEFAULT_STEPS)
  parser.add_argument("--chains", type=int, default=None,
                      help="chains of run 1 (default: 2 per device)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cpu-devices", type=int, default=None,
                      help="simulate this many CPU devices in this process")
  parser.add_argument("--coordinator", default=None,
                      help="host:port of process 0, for a multi-host run")
  parser.add_argument("--num-processes", type=int, default=None)
  parser.add_argument("--process-id", type=int, default=None)
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error("--steps must be >= 1")

  # All three must happen before JAX starts its backend (the first
  # computation); the workaround is for jax issue 39103 (see the README).
  amc_jax.use_xla_cpu_workaround()
  if args.cpu_devices is not None:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  if args.coordinator is not None:
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )

  result = run(args.steps, n_chains=args.chains, seed=args.seed)
  if jax.process_index() == 0:
    print(
        f"{result.n_devices} devices in {jax.process_count()} process(es),"
        f" {len(result.chain_losses)} chains, {args.steps} steps"
    )
    print(
        f"chains over devices: loss {np.median(result.chain_initial_losses):.4g}"
        f" -> median {np.median(result.chain_losses):.4e},"
        f" best {np.min(result.chain_losses):.4e} ({result.seconds[0]:.2f} s)"
    )
    print(
        f"data-parallel chain: loss {result.data_initial_loss:.4g}"
        f" -> {result.data_loss:.4e}, acceptance {result.data_acceptance:.3f}"
        f" ({result.seconds[1]:.2f} s)"
    )
  if args.coordinator is not None:
    jax.distributed.shutdown()
  return result


if __name__ == "__main__":
  main()
