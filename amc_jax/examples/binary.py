"""Train a binary-weight, sign-activation net on scikit-learn digits with aMC.

A net on which backpropagation has nothing to work with: every weight is
:math:`\\pm 1` and every hidden unit outputs :math:`\\operatorname{sign}(z)`,
so the loss is piecewise constant in the weights and its gradient is zero
almost everywhere (gradient methods need surrogates such as the
straight-through estimator; ``benchmarks/nondiff/`` compares with them).
Monte Carlo needs only the loss:

* the weights stay on the grid :math:`\\{-1, +1\\}` through
  :func:`amc_jax.proposals.discrete`, which flips a few of them per move;
* the real parameters (biases, and one output gain that sets the logits'
  scale) move by :func:`amc_jax.proposals.gaussian`;
* :func:`amc_jax.proposals.partition` puts the two together, and
  :func:`amc_jax.proposals.layerwise` moves one leaf per step, so a flip is
  accepted or rejected on its own, not together with a bias move.

The model is ``64 pixels -> hidden sign units -> 10 logits``:

.. math::
  h = \\operatorname{sign}(W_1 x / \\sqrt{64} + b_1), \\qquad
  \\text{logits} = g\\,(W_2 h / \\sqrt{H} + b_2),

with :math:`W_1, W_2 \\in \\{-1, +1\\}`, and the loss is the cross-entropy over
the 1437 training images of scikit-learn's 8x8 digits (batch mode: one loss
evaluation per step). The other 360 images are the test set.

Run ``python -m amc_jax.examples.binary --help`` for the options (it needs
scikit-learn for the data, ``pip install scikit-learn``).
"""

import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import amc_jax
from amc_jax.examples import _cli
from amc_jax import proposals

Params = dict[str, jax.Array]

BINARY = (-1.0, 1.0)
TERNARY = (-1.0, 0.0, 1.0)
# Defaults measured on 2 CPU cores (64 hidden units, seed 0): 30000 steps take
# 15 s (21 s with start-up and compilation) and reach 84% test accuracy, 91%
# training accuracy (chance is 10%), with about a quarter of the moves
# accepted; 40000 steps reach 83% (busy machine: 51 s of steps).
DEFAULT_HIDDEN = 64
DEFAULT_STEPS = 30_000
DEFAULT_CHUNK = 2_000
# The real parameters move by N(0, sigma^2); flips ignore sigma.
DEFAULT_SIGMA0 = 0.05
# About one flip per binary move: discrete() moves at least one entry, and
# with a fraction this small almost never more than one.
DEFAULT_FLIP_FRACTION = 1e-4
# Most flips near a good net are rejected; with the paper's n_reset = 100 and
# decay 0.95, sigma (of the biases) would shrink every ~100 steps and freeze
# them. A decay of 1 keeps it fixed.
DEFAULT_SIGMA_DECAY = 1.0


def sign(z: jax.Array) -> jax.Array:
  """:math:`\\operatorname{sign}(z)` with ``sign(0) = +1``: every unit is +-1."""
  return jnp.where(z >= 0, jnp.ones_like(z), -jnp.ones_like(z))


def load_digits(test_size: int = 360, seed: int = 0):
  """scikit-learn's 8x8 digits: ``(x_train, y_train, x_test, y_test)``.

  Pixels are scaled to [0, 1] (float32, shape ``[n, 64]``), labels are int32.
  The split is ``train_test_split(..., test_size=360, random_state=seed)``
  (1437 training and 360 test images), stratified by label.
  """
  try:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split
  except ImportError as e:  # pragma: no cover - the test extra installs it
    raise ImportError(
        "amc_jax.examples.binary needs scikit-learn for its data: pip install scikit-learn"
    ) from e
  digits = sk_load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  x_tr, x_te, y_tr, y_te = train_test_split(
      x, y, test_size=test_size, random_state=seed, stratify=y
  )
  return x_tr, y_tr, x_te, y_te


def init_params(
    key: jax.Array, sizes: Sequence[int], levels: Sequence[float] = BINARY
) -> Params:
  """Weights drawn uniformly from ``levels``; biases 0; output gain 1.

  ``sizes`` is ``(inputs, hidden..., outputs)``; the leaves are ``w0, b0, w1,
  b1, ...`` and ``gain``.
  """
  params: Params = {}
  keys = jax.random.split(key, len(sizes) - 1)
  grid = jnp.asarray(levels, jnp.float32)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    params[f"w{i}"] = jax.random.choice(k, grid, (n_in, n_out))
    params[f"b{i}"] = jnp.zeros((n_out,), jnp.float32)
  params["gain"] = jnp.ones((), jnp.float32)
  return params


def apply(params: Params, x: jax.Array, activation=sign) -> jax.Array:
  """The logits: ``activation`` hidden layers, weights scaled by 1/sqrt(fan-in)."""
  n_layers = sum(1 for k in params if k.startswith("w"))
  h = x
  for i in range(n_layers):
    w = params[f"w{i}"]
    z = h @ w / np.sqrt(w.shape[0]).astype(np.float32)
    z = z + jnp.broadcast_to(params[f"b{i}"], z.shape)
    h = activation(z) if i < n_layers - 1 else z
  return params["gain"] * h


def weight_labels(params: Params) -> dict[str, str]:
  """``"discrete"`` for the weights ``w*``, ``"real"`` for biases and gain."""
  return {k: "discrete" if k.startswith("w") else "real" for k in params}


def proposal(
    levels: Sequence[float] = BINARY, flip_fraction: float = DEFAULT_FLIP_FRACTION
) -> proposals.Proposal:
  """One leaf per step: a few weights change level, or the real leaves move."""
  return proposals.layerwise(
      proposals.partition(
          {"discrete": proposals.discrete(levels, flip_fraction),
           "real": proposals.gaussian()},
          weight_labels,
      )
  )


def cross_entropy(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  logits = apply(params, x)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def accuracy(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean((jnp.argmax(apply(params, x), axis=-1) == y).astype(jnp.float32))


class BinaryResult(NamedTuple):
  """What :func:`train` returns.

  Attributes:
    params: the final params (weights on the grid).
    state: the final :class:`amc_jax.AMCState`.
    train_accuracy, test_accuracy: of the final params.
    history: NumPy arrays with one entry per chunk: ``step``, ``loss`` (the
      training cross-entropy), ``acceptance`` (within the chunk) and
      ``test_accuracy``.
    seconds: wall time of the compiled chunks (compilation excluded).
  """

  params: Params
  state: amc_jax.AMCState
  train_accuracy: float
  test_accuracy: float
  history: dict[str, np.ndarray]
  seconds: float


def train(
    steps: int = DEFAULT_STEPS,
    *,
    hidden: int = DEFAULT_HIDDEN,
    levels: Sequence[float] = BINARY,
    sigma0: float = DEFAULT_SIGMA0,
    flip_fraction: float = DEFAULT_FLIP_FRACTION,
    sigma_decay: float = DEFAULT_SIGMA_DECAY,
    chunk: int = DEFAULT_CHUNK,
    seed: int = 0,
    data=None,
    verbose: bool = False,
) -> BinaryResult:
  """Trains the sign-activation net with ``levels``-valued weights by aMC.

  Args:
    steps: aMC steps (one loss evaluation each); rounded up to whole chunks.
    hidden: hidden sign units.
    levels: the weight grid (``BINARY`` or ``TERNARY``).
    sigma0, flip_fraction, sigma_decay: see the module constants.
    chunk: steps per jitted ``lax.scan``; a history entry per chunk.
    seed: initial weights and the chain's random numbers.
    data: ``(x_train, y_train, x_test, y_test)``; default :func:`load_digits`.
    verbose: print a line per chunk.

  Returns:
    A :class:`BinaryResult`.
  """
  if steps < 1 or chunk < 1:
    raise ValueError(f"steps and chunk must be >= 1, got {steps} and {chunk}.")
  x_tr, y_tr, x_te, y_te = (jnp.asarray(a) for a in (data or load_digits()))
  sizes = (x_tr.shape[1], hidden, int(jnp.max(y_tr)) + 1)
  params = init_params(jax.random.key(seed), sizes, levels)
  tx = amc_jax.amc(sigma0, n_reset=100, sigma_decay=sigma_decay,
                   proposal=proposal(levels, flip_fraction), seed=seed)
  state = tx.init(params)

  # The data are arguments, not constants folded into the program: XLA:CPU
  # constant-operand fusions are where jax issue 39103 lives.
  @jax.jit
  def run_chunk(params, state, x, y):
    def body(carry, _):
      p, s = carry
      updates, s = tx.update(None, s, p, value_fn=lambda q: cross_entropy(q, x, y))
      return (optax.apply_updates(p, updates), s), amc_jax.monte_carlo_state(s).info.accepted
    (params, state), accepted = jax.lax.scan(body, (params, state), None, length=chunk)
    return params, state, jnp.mean(accepted.astype(jnp.float32))

  evaluate = jax.jit(accuracy)
  history = {"step": [], "loss": [], "acceptance": [], "test_accuracy": []}
  run_chunk.lower(params, state, x_tr, y_tr).compile()
  seconds, done = 0.0, 0
  while done < steps:
    start = time.perf_counter()
    params, state, acceptance = jax.block_until_ready(run_chunk(params, state, x_tr, y_tr))
    seconds += time.perf_counter() - start
    done += chunk
    mc = amc_jax.monte_carlo_state(state)
    test = float(evaluate(params, x_te, y_te))
    for name, value in (("step", done), ("loss", float(mc.loss)),
                        ("acceptance", float(acceptance)), ("test_accuracy", test)):
      history[name].append(value)
    if verbose:
      print(f"step {done:7d}  loss {float(mc.loss):.4f}  acceptance {float(acceptance):.4f}"
            f"  test accuracy {test:.3f}", flush=True)
  return BinaryResult(
      params=params,
      state=state,
      train_accuracy=float(evaluate(params, x_tr, y_tr)),
      test_accuracy=float(evaluate(params, x_te, y_te)),
      history={k: np.asarray(v) for k, v in history.items()},
      seconds=seconds,
  )


def main(argv=None) -> BinaryResult:
  parser = _cli.parser("amc_jax.examples.binary", __doc__, DEFAULT_STEPS)
  parser.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN)
  parser.add_argument("--ternary", action="store_true", help="weights in {-1, 0, +1}")
  parser.add_argument("--sigma0", type=float, default=DEFAULT_SIGMA0)
  parser.add_argument("--flip-fraction", type=float, default=DEFAULT_FLIP_FRACTION)
  parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-xla-workaround", action="store_true",
                      help="skip amc_jax.use_xla_cpu_workaround()")
  args = parser.parse_args(argv)
  if not args.no_xla_workaround:
    amc_jax.use_xla_cpu_workaround()
  levels = TERNARY if args.ternary else BINARY
  print(f"binary example: 64-{args.hidden}-10 sign net, weights in {levels}, "
        f"scikit-learn digits (1437 train / 360 test), {args.steps} aMC steps")
  result = train(args.steps, hidden=args.hidden, levels=levels, sigma0=args.sigma0,
                 flip_fraction=args.flip_fraction, chunk=args.chunk, seed=args.seed,
                 verbose=True)
  on_grid = all(bool(jnp.all(jnp.isin(v, jnp.asarray(levels))))
                for k, v in result.params.items() if k.startswith("w"))
  print(f"train accuracy {result.train_accuracy:.3f}  test accuracy "
        f"{result.test_accuracy:.3f}  ({result.seconds:.1f} s of steps; weights on the "
        f"grid: {on_grid})")
  return result


if __name__ == "__main__":
  main()
