"""Train a one-hidden-layer tanh net on sin(2 pi theta) with aMC.

The problem of Section II B of Whitelam et al. (2022): a net with one input
theta and one output,

  f_x(theta) = sum_i a_i tanh(w_i theta + b_i),

with 30 hidden units (90 parameters), learns f_0(theta) = sin(2 pi theta); the
loss U(x) is the mean-squared error at 1000 evenly spaced points of [0, 1).
aMC runs in batch mode: the data never change, so the state caches U(x) and
each step costs one evaluation of the loss. Steps run as jitted
``jax.lax.scan`` chunks, with a progress line between chunks.

Run ``python -m amc_jax.examples.sine --help`` for the options.
"""

import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import amc_jax
from amc_jax.examples import _cli

HIDDEN = 30
N_POINTS = 1000
# Defaults measured on 2 CPU cores: 1e5 steps take ~10-15 s and reach
# U = 4.7e-6, 4.3e-7, 1.4e-7 (seeds 0, 1, 2; from U = 0.5). Most of the gain
# comes in the first 3-5e4 steps; then sigma decays towards ~1e-9 and float32,
# not the step count, limits progress: moves that small change U by less than
# its float32 spacing, so they give dU = 0, which T = 0 accepts
# (U(x') <= U(x), Section III). The acceptance rate then rises again without
# the loss moving.
DEFAULT_STEPS = 100_000
DEFAULT_CHUNK = 5_000
DEFAULT_SIGMA0 = 1e-2
DEFAULT_EPSILON = 0.1
DEFAULT_N_RESET = 100
# Section III of the paper initialises x_i ~ N(0, sigma0^2) with sigma0 = 1e-2.
# At that scale every tanh unit starts in its linear regime and the net output
# is ~1e-4, so training starts from the "learned nothing" loss
# U = mean(sin^2) = 0.5 whatever the seed; N(0, 0.1^2) trains about as well.
DEFAULT_INIT_SCALE = 1e-2

Params = dict[str, jax.Array]


class SineResult(NamedTuple):
  """What :func:`train` returns.

  Attributes:
    params: the final params, a dict of float32 arrays ``w``, ``b``, ``a``.
    state: the final :class:`amc_jax.AMCState`.
    initial_loss: U at the initial params.
    history: NumPy arrays with one entry per chunk: ``step`` (steps taken at
      the end of the chunk), ``loss``, ``acceptance`` (acceptance rate within
      the chunk) and ``sigma``.
    steps_per_second: steps per second of the compiled chunks, compilation
      excluded.
    compile_seconds: time spent compiling the chunk programs.
  """

  params: Params
  state: amc_jax.AMCState
  initial_loss: float
  history: dict[str, np.ndarray]
  steps_per_second: float
  compile_seconds: float


def make_data(n_points: int = N_POINTS) -> tuple[jax.Array, jax.Array]:
  """Returns ``(theta, target)``: ``n_points`` evenly spaced theta in [0, 1)."""
  theta = jnp.arange(n_points, dtype=jnp.float32) / n_points
  return theta, jnp.sin(2 * jnp.pi * theta)


def init_params(
    key: jax.Array, hidden: int = HIDDEN, scale: float = DEFAULT_INIT_SCALE
) -> Params:
  """Draws every parameter from N(0, scale^2), in float32."""
  keys = jax.random.split(key, 3)
  return {
      name: scale * jax.random.normal(k, (hidden,), jnp.float32)
      for name, k in zip(("w", "b", "a"), keys)
  }


def predict(params: Params, theta: jax.Array) -> jax.Array:
  """The net output ``sum_i a_i tanh(w_i theta + b_i)`` at every theta."""
  # Explicit [:, None] / [None, :] because the tests run with rank promotion
  # set to "raise".
  hidden = jnp.tanh(theta[:, None] * params["w"][None, :] + params["b"][None, :])
  return hidden @ params["a"]


def make_loss(theta: jax.Array, target: jax.Array) -> Callable[[Params], jax.Array]:
  """The mean-squared error U(x) of the net on ``(theta, target)``."""

  def loss(params: Params) -> jax.Array:
    return jnp.mean((predict(params, theta) - target) ** 2)

  return loss


def _compile_chunk(
    tx: optax.GradientTransformationExtraArgs,
    loss: Callable[[Params], jax.Array],
    params: Params,
    state: Any,
    length: int,
):
  """Compiles ``length`` aMC steps as one scanned program, ahead of time."""

  def step(carry, _):
    params, state = carry
    updates, state = tx.update(None, state, params, value_fn=loss)
    return (optax.apply_updates(params, updates), state), None

  def run(params, state):
    (params, state), _ = jax.lax.scan(step, (params, state), None, length=length)
    return params, state

  # Ahead-of-time compilation keeps compile time out of the steps/second.
  return jax.jit(run).lower(params, state).compile()


def train(
    steps: int = DEFAULT_STEPS,
    *,
    seed: int = 0,
    sigma0: float = DEFAULT_SIGMA0,
    epsilon: float = DEFAULT_EPSILON,
    n_reset: int = DEFAULT_N_RESET,
    chunk: int = DEFAULT_CHUNK,
    init_scale: float = DEFAULT_INIT_SCALE,
    log: Optional[Callable[[str], None]] = print,
) -> SineResult:
  """Trains the sine net with :func:`amc_jax.amc` in batch mode.

  Args:
    steps: number of aMC steps (>= 1).
    seed: seeds both the initial params and the aMC chain.
    sigma0: initial step size of aMC.
    epsilon: rate at which the proposal centres follow accepted moves (Eq. 10).
    n_reset: consecutive rejections after which sigma shrinks by 0.95.
    chunk: steps per compiled ``lax.scan``; a progress line follows each. A
      last, shorter chunk takes the remainder of ``steps``.
    init_scale: standard deviation of the initial params.
    log: called with each progress line; ``None`` for silence.

  Returns:
    A :class:`SineResult`.

  Examples:
    >>> result = train(steps=300, chunk=100, log=None)
    >>> int(result.state.count), len(result.history["loss"])
    (300, 3)
    >>> bool(result.history["loss"][-1] < result.initial_loss)
    True
  """
  if steps < 1 or chunk < 1:
    raise ValueError(f"steps and chunk must be >= 1, got {steps} and {chunk}.")
  log = log or (lambda line: None)
  init_key, chain_key = jax.random.split(jax.random.key(seed))
  theta, target = make_data()
  loss = make_loss(theta, target)
  params = init_params(init_key, scale=init_scale)
  initial_loss = float(loss(params))
  tx = amc_jax.amc(sigma0, epsilon=epsilon, n_reset=n_reset, seed=chain_key)
  state = tx.init(params)

  lengths = [chunk] * (steps // chunk) + ([steps % chunk] if steps % chunk else [])
  start = time.perf_counter()
  programs = {n: _compile_chunk(tx, loss, params, state, n) for n in set(lengths)}
  compile_seconds = time.perf_counter() - start

  log(
      f"aMC on sin(2 pi theta): {HIDDEN} tanh units, {3 * HIDDEN} params,"
      f" sigma0={sigma0:g}, epsilon={epsilon:g}, n_reset={n_reset}, seed={seed}"
  )
  log(f"initial loss {initial_loss:.6g}; compiled in {compile_seconds:.2f} s")
  history = {"step": [], "loss": [], "acceptance": [], "sigma": []}
  run_seconds = 0.0
  for length in lengths:
    accepted_before = int(state.n_accept)
    start = time.perf_counter()
    params, state = jax.block_until_ready(programs[length](params, state))
    run_seconds += time.perf_counter() - start
    row = {
        "step": int(state.count),
        "loss": float(state.loss),
        "acceptance": (int(state.n_accept) - accepted_before) / length,
        "sigma": float(state.sigma),
    }
    for name, value in row.items():
      history[name].append(value)
    log(
        f"step {row['step']:>8d}  loss {row['loss']:.4e}"
        f"  acceptance {row['acceptance']:.3f}  sigma {row['sigma']:.3e}"
    )
  return SineResult(
      params=params,
      state=state,
      initial_loss=initial_loss,
      history={name: np.asarray(values) for name, values in history.items()},
      steps_per_second=steps / run_seconds,
      compile_seconds=compile_seconds,
  )


def main(argv: Optional[Sequence[str]] = None) -> SineResult:
  """Command-line entry point: trains, prints progress and a summary."""
  # Before the first computation: this loss is a matmul-then-mean over 1000
  # points, the pattern of the XLA:CPU bug of jax issue 39103.
  amc_jax.use_xla_cpu_workaround()
  parser = _cli.parser("amc_jax.examples.sine", __doc__, DEFAULT_STEPS)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sigma0", type=float, default=DEFAULT_SIGMA0)
  parser.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON)
  parser.add_argument("--n-reset", type=int, default=DEFAULT_N_RESET)
  parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                      help="steps per compiled scan, between progress lines")
  parser.add_argument("--init-scale", type=float, default=DEFAULT_INIT_SCALE,
                      help="standard deviation of the initial params")
  args = parser.parse_args(argv)
  if args.steps < 1 or args.chunk < 1:
    parser.error("--steps and --chunk must be >= 1")

  result = train(
      args.steps,
      seed=args.seed,
      sigma0=args.sigma0,
      epsilon=args.epsilon,
      n_reset=args.n_reset,
      chunk=args.chunk,
      init_scale=args.init_scale,
  )
  state = result.state
  theta, target = make_data()
  max_error = float(jnp.max(jnp.abs(predict(result.params, theta) - target)))
  print(f"final loss: {float(state.loss):.6e} (initial {result.initial_loss:.6g})")
  print(f"max |f_x(theta) - sin(2 pi theta)|: {max_error:.3e}")
  print(
      f"acceptance rate: {int(state.n_accept) / int(state.count):.4f}"
      f" ({int(state.n_accept)} of {int(state.count)} moves)"
  )
  print(
      f"steps/second: {result.steps_per_second:.0f}"
      f" (compile {result.compile_seconds:.2f} s excluded)"
  )
  return result


if __name__ == "__main__":
  main()
