"""The benchmark problems, each a loss of params and a batch plus its data.

Shared by the speed benchmarks so that every table measures the same models
on the same data: the sine net of the correspondence paper, the 784-16-16-10
MLP of Figs. 1 and 7, the deep narrow net of Fig. 6 and a simple tanh RNN on
long sequences (Fig. 5). All float32. Then the same MLP and deep narrow net as
Flax modules (``MLP``, ``DeepNarrow``: signal norm needs a Flax model), with
their loss ``mse`` and a float64 NumPy forward pass to check losses against.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _mnist


class Problem(NamedTuple):
  name: str
  description: str
  params: Any  # initial params
  loss: Callable[[Any, Any], jax.Array]  # loss(params, batch)
  data: Any  # the full data set, a tuple of arrays with a leading example axis
  numpy_data: dict  # the same as NumPy, for the PyTorch reference
  torch_problem: str  # the name of this problem in benchmarks/_torch_reference.py


def fashion_mnist(n: int) -> tuple[np.ndarray, np.ndarray, str]:
  """The first n training images (flattened, in [0, 1]) and one-hot labels."""
  x, y, source = _mnist.training_images(_mnist.data_dir(None), n)
  return x, np.eye(10, dtype=np.float32)[y], source


def _dense_init(key, fan_in, fan_out):
  """PyTorch's nn.Linear default init, so both frameworks start alike."""
  bound = 1.0 / np.sqrt(fan_in)
  kw, kb = jax.random.split(key)
  return {
      "w": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
      "b": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
  }


HIDDEN, N_POINTS = 30, 1000  # the sine net of the speed benchmarks and the evosax study


def sine(n_points: int = N_POINTS, hidden: int = HIDDEN) -> Problem:
  theta = jnp.arange(n_points, dtype=jnp.float32) / n_points
  target = jnp.sin(2 * jnp.pi * theta)
  keys = jax.random.split(jax.random.key(0), 3)
  params = {k: 0.1 * jax.random.normal(kk, (hidden,)) for k, kk in zip("wba", keys)}

  def loss(p, batch):
    x, y = batch
    f = jnp.tanh(x[:, None] * p["w"][None, :] + p["b"][None, :]) @ p["a"]
    return jnp.mean((f - y) ** 2)

  return Problem(
      "sine", f"1-{hidden}-1 tanh net, {n_points} points of sin(2 pi theta)", params, loss,
      (theta, target), {"x": np.asarray(theta), "y": np.asarray(target)}, "sine",
  )


def sine_problem():
  """The sine net as (params, loss(params)) with its data built in."""
  problem = sine(N_POINTS, HIDDEN)
  return problem.params, lambda p: problem.loss(p, problem.data)


def mlp(n_examples: int = 60000) -> Problem:
  x, y, source = fashion_mnist(n_examples)
  keys = jax.random.split(jax.random.key(0), 3)
  params = [_dense_init(k, a, b) for k, (a, b) in zip(keys, [(784, 16), (16, 16), (16, 10)])]

  def loss(p, batch):
    h, t = batch
    h = jnp.tanh(h @ p[0]["w"] + p[0]["b"])
    h = jnp.tanh(h @ p[1]["w"] + p[1]["b"])
    out = jax.nn.softmax(h @ p[2]["w"] + p[2]["b"])
    return jnp.mean(jnp.sum((out - t) ** 2, axis=-1))

  return Problem(
      "mlp", f"784-16-16-10 tanh MLP, softmax + MSE, {len(x)} examples of {source}",
      params, loss, (jnp.asarray(x), jnp.asarray(y)), {"x": x, "y": y}, "mlp",
  )


def step_function(n_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """The deep nets' data (Fig. 6): theta = i / n as [n, 1], f0 = 0.5 on (0.5, 0.75), else 0, as [n]."""
  theta = np.arange(n_points, dtype=np.float32)[:, None] / n_points
  target = np.where((theta[:, 0] > 0.5) & (theta[:, 0] < 0.75), 0.5, 0.0).astype(np.float32)
  return theta, target


def deep(depth: int = 32, n_points: int = 1000) -> Problem:
  theta, target = step_function(n_points)
  target = target[:, None]
  widths = [1] + [4] * (depth - 2) + [10, 1]
  keys = jax.random.split(jax.random.key(0), depth)
  params = [_dense_init(k, a, b) for k, a, b in zip(keys, widths[:-1], widths[1:])]

  def loss(p, batch):
    h, t = batch
    for layer in p[:-1]:
      h = jnp.tanh(h @ layer["w"] + layer["b"])
    out = h @ p[-1]["w"] + p[-1]["b"]
    return jnp.mean((out - t) ** 2)

  return Problem(
      f"deep{depth}", f"deep narrow tanh net, depth {depth} (width 4, then 10), {n_points} points",
      params, loss, (jnp.asarray(theta), jnp.asarray(target)),
      {"x": theta, "y": target, "depth": depth}, "deep",
  )


def rnn(n_sequences: int = 1500, length: int = 196, hidden: int = 32) -> Problem:
  """A tanh RNN reading binary pixels (one-hot of 2) one per step."""
  rng = np.random.default_rng(0)
  bits = rng.random((n_sequences, length)) < 0.3
  x = np.eye(2, dtype=np.float32)[bits.astype(np.int64)]
  labels = (bits[:, : length // 2].sum(1) > bits[:, length // 2 :].sum(1)).astype(np.int64)
  k = jax.random.split(jax.random.key(0), 3)
  bound = 1.0 / np.sqrt(hidden)
  u = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)
  params = {
      "wi": u(k[0], (2, hidden)), "wh": u(k[1], (hidden, hidden)), "b": jnp.zeros((hidden,)),
      "out": _dense_init(k[2], hidden, 2),
  }

  def loss(p, batch):
    xs, ys = batch
    drive = jnp.einsum("ntc,ch->tnh", xs, p["wi"]) + p["b"]  # the input part, all steps at once

    def step(h, d):
      return jnp.tanh(d + h @ p["wh"]), None

    h, _ = jax.lax.scan(step, jnp.zeros((xs.shape[0], hidden), xs.dtype), drive)
    logits = h @ p["out"]["w"] + p["out"]["b"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, ys[:, None], axis=1))

  return Problem(
      "rnn", f"tanh RNN, hidden {hidden}, {n_sequences} sequences of length {length}, cross-entropy",
      params, loss, (jnp.asarray(x), jnp.asarray(labels.astype(np.int32))),
      {"x": x, "y": labels}, "rnn",
  )


# ---------------------------------------------------------------------------
# Flax models of the signal-norm study and Fig. 6, Figs. 1 and 7's MLP.
# ---------------------------------------------------------------------------

DEEP_POINTS = 1000  # points of the deep-net problem
INIT_STD = 1e-2
INIT_DESCRIPTION = (
    "every kernel and bias ~ N(0, 1e-4), i.e. std 1e-2"
    " (flax nn.initializers.normal(1e-2) for kernels and biases)"
)


class MLP(nn.Module):
  """784-16-16-10, tanh hidden units, softmax outputs (flax default init)."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(16)(x))
    x = jnp.tanh(nn.Dense(16)(x))
    return nn.softmax(nn.Dense(10)(x))


class DeepNarrow(nn.Module):
  """1 -> (depth - 2) x [Dense(4), tanh] -> Dense(10), tanh -> Dense(1)."""

  depth: int

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.normal(INIT_STD)
    dense = lambda n: nn.Dense(n, kernel_init=init, bias_init=init)
    for _ in range(self.depth - 2):
      x = jnp.tanh(dense(4)(x))
    x = jnp.tanh(dense(10)(x))
    return dense(1)(x)[:, 0]


def mse(out, target):
  """Mean over examples of the squared error summed over outputs."""
  err = (out - target) ** 2
  return jnp.mean(jnp.sum(err, axis=-1) if err.ndim > 1 else err)


def numpy_loss(params, x, target, softmax):
  """The loss of MLP or DeepNarrow in float64 NumPy (layers Dense_0, Dense_1, ...)."""
  h = np.asarray(x, np.float64)
  n = len(params)
  for i in range(n):
    layer = params[f"Dense_{i}"]
    h = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
    if i < n - 1:
      h = np.tanh(h)
  if softmax:
    h = np.exp(h - h.max(-1, keepdims=True))
    h /= h.sum(-1, keepdims=True)
  else:
    h = h[:, 0]
  err = (h - np.asarray(target, np.float64)) ** 2
  return float(np.mean(err.sum(-1) if err.ndim > 1 else err))


def deep_problem(n: int = DEEP_POINTS) -> tuple[jax.Array, jax.Array]:
  """:func:`step_function` as JAX arrays, for :class:`DeepNarrow` (theta [n, 1], f0 [n]).

  theta is divided by XLA here, as the committed signal-norm and Fig. 6
  results were made: it differs from NumPy's division in the last bit at some
  points.
  """
  theta = jnp.arange(n, dtype=jnp.float32) / n
  return theta[:, None], jnp.asarray(step_function(n)[1])


def fashion_mnist_jax(n: int) -> tuple[jax.Array, jax.Array, str]:
  """:func:`fashion_mnist` as JAX arrays: (x [n, 784], one-hot [n, 10], description)."""
  x, y, source = fashion_mnist(n)
  return jnp.asarray(x), jnp.asarray(y), source


# ---------------------------------------------------------------------------
# The wide MLP of the memory benchmark (speed/memory.py and its RSS subprocesses).
# ---------------------------------------------------------------------------


def sds(shape, dtype=None):
  """A ShapeDtypeStruct (float32 unless told), for compiling without data."""
  import jax
  import jax.numpy as jnp

  return jax.ShapeDtypeStruct(tuple(shape), dtype or jnp.float32)


def wide_mlp(width: int, batch: int = 8, d_in: int = 784, abstract: bool = True, seed: int = 0):
  """784-width x3-10 tanh MLP and its MSE loss on one batch of fixed data (the
  memory benchmark's, also run by its peak-RSS subprocesses).

  ``abstract``: params as ShapeDtypeStructs (for compiling); else a random
  init (scaled 1/sqrt(fan in)) and random targets, so that training lowers
  the loss."""
  import jax
  import jax.numpy as jnp

  sizes = [(d_in, width), (width, width), (width, width), (width, 10)]
  kx, ky, kp = jax.random.split(jax.random.key(seed), 3)
  if abstract:
    params = {f"l{i}": {"w": sds(s), "b": sds(s[1:])} for i, s in enumerate(sizes)}
  else:
    # amc_jax's leaf-by-leaf normals, drawn in blocks: a plain
    # jax.random.normal of a billion-entry kernel holds several
    # kernel-sized word arrays on CPU.
    import amc_jax

    shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in sizes]

    @jax.jit
    def init(key):
      z = amc_jax.standard_normal_like(key, shapes)
      return {f"l{i}": {"w": w / jnp.sqrt(jnp.float32(s[0])), "b": jnp.zeros(s[1], jnp.float32)}
              for i, (w, s) in enumerate(zip(z, sizes))}

    params = init(kp)
  x = jax.random.normal(kx, (batch, d_in))
  y = jax.random.normal(ky, (batch, 10))

  def loss(p):
    h = x
    for i in range(len(sizes)):
      h = h @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"]
      if i + 1 < len(sizes):
        h = jnp.tanh(h)
    return jnp.mean((h - y) ** 2)

  return params, loss
