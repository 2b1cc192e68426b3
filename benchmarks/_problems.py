"""The benchmark problems, each a loss of params and a batch plus its data.

Shared by the speed benchmarks so that every table measures the same models
on the same data: the sine net of the correspondence paper, the 784-16-16-10
MLP of Figs. 1 and 7, the deep narrow net of Fig. 6 and a simple tanh RNN on
long sequences (Fig. 5). All float32.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

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


def sine(n_points: int = 1000, hidden: int = 30) -> Problem:
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


def deep(depth: int = 32, n_points: int = 1000) -> Problem:
  theta = np.arange(n_points, dtype=np.float32)[:, None] / n_points
  target = np.where((theta > 0.5) & (theta < 0.75), 0.5, 0.0).astype(np.float32)
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
