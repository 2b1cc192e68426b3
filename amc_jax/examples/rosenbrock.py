"""aMC on the Rosenbrock function: Fig. 3 of Whitelam et al. (2022).

A particle starts at (x, y) = (-2, 2), outside the curved valley of

  f(x, y) = (1 - x)^2 + 100 (y - x^2)^2      (Eq. 6),

whose global minimum f = 0 lies at (1, 1), and moves by aMC with sigma0 = 1e-3
and n_reset = 20 for 1e4 steps, for epsilon = 0, 0.01 and 0.1. Following the
accepted moves (epsilon > 0) acts like momentum along the valley floor: the
larger epsilon, the faster the minimum is reached (f ~ 1e-24 for
epsilon = 0.1, while epsilon = 0 is still near f ~ 0.5 after 1e4 steps).

Every epsilon runs several independent chains (seeds) at once, with
:func:`amc_jax.init_ensemble` and ``jax.vmap(tx.update)``. The run is in
float64: float32 cannot resolve f below ~1e-14, where the figure's curves
separate.

Run ``python -m amc_jax.examples.rosenbrock --help`` for the options.
"""

import time
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import amc_jax
from amc_jax.examples import _cli

START = (-2.0, 2.0)
EPSILONS = (0.0, 0.01, 0.1)
# Fig. 3's caption: sigma0 = 1e-3, n_s = 20, continued to n = 1e4 steps. (The
# text says n_s = 100; we follow the caption, with which the final values of
# Fig. 3b come out: f ~ 1e-24 at epsilon = 0.1 and ~0.5 at epsilon = 0.)
DEFAULT_STEPS = 10_000
DEFAULT_SIGMA0 = 1e-3
DEFAULT_N_RESET = 20
DEFAULT_SEEDS = 3


class RosenbrockResult(NamedTuple):
  """What :func:`run` returns.

  Attributes:
    epsilons: the epsilons run, in order.
    f: array ``[len(epsilons), n_seeds, steps + 1]``: f at the current
      position before the first step and after every step.
    final_params: array ``[len(epsilons), n_seeds, 2]``: the final (x, y).
    states: the final ensemble state (leading axis: seeds) of every epsilon.
    seconds: wall time of each epsilon's compiled run, compilation excluded.
  """

  epsilons: tuple[float, ...]
  f: np.ndarray
  final_params: np.ndarray
  states: tuple[amc_jax.AMCState, ...]
  seconds: tuple[float, ...]


def rosenbrock(params: jax.Array) -> jax.Array:
  """Eq. (6) of the paper at ``params = [x, y]``."""
  x, y = params[0], params[1]
  return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def run_epsilon(
    epsilon: float,
    steps: int = DEFAULT_STEPS,
    *,
    n_seeds: int = DEFAULT_SEEDS,
    sigma0: float = DEFAULT_SIGMA0,
    n_reset: int = DEFAULT_N_RESET,
    seed: int = 0,
) -> tuple[np.ndarray, jax.Array, amc_jax.AMCState, float]:
  """Runs ``n_seeds`` chains of aMC from (-2, 2) for one epsilon.

  The params take JAX's default float dtype: float64 only if the caller has
  enabled ``jax_enable_x64`` (as :func:`main` does).

  Returns:
    ``(f, params, state, seconds)``: f of every chain before the first and
    after every step (``[n_seeds, steps + 1]``), the final params
    (``[n_seeds, 2]``), the final ensemble state, and the run time with
    compilation excluded.
  """
  dtype = jnp.result_type(float)
  params = jnp.tile(jnp.asarray([START], dtype), (n_seeds, 1))
  tx = amc_jax.amc(sigma0, epsilon=epsilon, n_reset=n_reset)
  # The same chain keys for every epsilon, so that epsilon is the only change.
  state = amc_jax.init_ensemble(tx, params, jax.random.key(seed))
  update = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=rosenbrock))

  def step(carry, _):
    params, state = carry
    updates, state = update(params, state)
    # state.loss is f at the params after this step (accepted or not).
    return (optax.apply_updates(params, updates), state), state.loss

  def scan(params, state):
    return jax.lax.scan(step, (params, state), None, length=steps)

  compiled = jax.jit(scan).lower(params, state).compile()
  start = time.perf_counter()
  (params, state), f = jax.block_until_ready(compiled(params, state))
  seconds = time.perf_counter() - start
  f0 = jax.vmap(rosenbrock)(jnp.tile(jnp.asarray([START], dtype), (n_seeds, 1)))
  f = np.concatenate([np.asarray(f0)[:, None], np.asarray(f).T], axis=1)
  return f, params, state, seconds


def run(
    steps: int = DEFAULT_STEPS,
    *,
    epsilons: Sequence[float] = EPSILONS,
    n_seeds: int = DEFAULT_SEEDS,
    sigma0: float = DEFAULT_SIGMA0,
    n_reset: int = DEFAULT_N_RESET,
    seed: int = 0,
) -> RosenbrockResult:
  """Runs :func:`run_epsilon` for every epsilon and collects the results.

  Examples:
    >>> result = run(steps=200, epsilons=(0.1,), n_seeds=2)
    >>> result.f.shape
    (1, 2, 201)
    >>> bool((result.f[:, :, -1] < result.f[:, :, 0]).all())
    True
  """
  if steps < 1 or n_seeds < 1:
    raise ValueError(f"steps and n_seeds must be >= 1, got {steps} and {n_seeds}.")
  outs = [
      run_epsilon(
          eps, steps, n_seeds=n_seeds, sigma0=sigma0, n_reset=n_reset, seed=seed
      )
      for eps in epsilons
  ]
  return RosenbrockResult(
      epsilons=tuple(float(e) for e in epsilons),
      f=np.stack([o[0] for o in outs]),
      final_params=np.stack([np.asarray(o[1]) for o in outs]),
      states=tuple(o[2] for o in outs),
      seconds=tuple(o[3] for o in outs),
  )


def _checkpoints(steps: int) -> list[int]:
  """Steps at which to print f: 0, 1e3, 2e3 (Fig. 3a), 5e3, 1e4 (Fig. 3b)."""
  marks = [0, steps // 10, steps // 5, steps // 2, steps]
  return sorted(set(marks))


def main(argv: Optional[Sequence[str]] = None) -> RosenbrockResult:
  """Command-line entry point: runs Fig. 3 and prints f per epsilon."""
  parser = _cli.parser("amc_jax.examples.rosenbrock", __doc__, DEFAULT_STEPS)
  parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                      help="independent chains per epsilon")
  parser.add_argument("--seed", type=int, default=0, help="key of the chains")
  parser.add_argument("--sigma0", type=float, default=DEFAULT_SIGMA0)
  parser.add_argument("--n-reset", type=int, default=DEFAULT_N_RESET)
  args = parser.parse_args(argv)
  if args.steps < 1 or args.seeds < 1:
    parser.error("--steps and --seeds must be >= 1")

  # float32 cannot show f below ~1e-14 (Fig. 3b goes to 1e-24). This is a
  # main program, so it may switch x64 on for the whole process.
  jax.config.update("jax_enable_x64", True)
  print(
      f"aMC on the Rosenbrock function from {START}, sigma0={args.sigma0:g},"
      f" n_reset={args.n_reset}, {args.steps} steps, {args.seeds} chains per"
      f" epsilon, {jnp.result_type(float)}"
  )
  result = run(args.steps, n_seeds=args.seeds, sigma0=args.sigma0, n_reset=args.n_reset,
               seed=args.seed)
  marks = _checkpoints(args.steps)
  header = "".join(f"{'n=' + str(n):>12s}" for n in marks)
  for i, eps in enumerate(result.epsilons):
    print(f"\nepsilon = {eps:g}  ({result.seconds[i]:.2f} s for all chains)")
    print(f"{'chain':>6s}{header}   final (x, y)")
    for c in range(result.f.shape[1]):
      values = "".join(f"{result.f[i, c, n]:12.3e}" for n in marks)
      x, y = result.final_params[i, c]
      print(f"{c:>6d}{values}   ({x:.12f}, {y:.12f})")
  print("\nfinal f (median over chains):")
  for i, eps in enumerate(result.epsilons):
    finals = result.f[i, :, -1]
    print(
        f"  epsilon = {eps:<5g} median {np.median(finals):.3e}"
        f"  (min {finals.min():.3e}, max {finals.max():.3e})"
    )
  return result


if __name__ == "__main__":
  main()
