"""One net, many ways of writing it: the losses of ``speed/step.py --forms``.

The step must cost the same whatever way a user writes the loss. Each form
below computes the same function of the same params (up to rounding): the
paper's 1-H-1 sine net and a small MLP (16 inputs, three tanh hidden layers
of 32, one output, 1000 examples), each as flax ``Dense``, matmul,
``einsum``, a broadcast product, a per-example ``vmap`` and a ``lax.scan``
(over hidden units for the sine net, over the stacked hidden layers for the
MLP). Every form is timed against its own floor (one normal draw, the trial
point materialised behind ``lax.optimization_barrier``, one evaluation, one
uniform and a ``where``), and ``metropolis`` against blackjax's random-walk
Metropolis on the same target (and on a 1000-d Gaussian).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

H_SINE, N_SINE = 30, 1000
D_IN, H_MLP, LAYERS, N_MLP = 16, 32, 3, 1000


def _sine_data():
  theta = jnp.arange(N_SINE, dtype=jnp.float32) / N_SINE
  return theta, jnp.sin(2 * jnp.pi * theta)


def _sine_params():
  keys = jax.random.split(jax.random.key(0), 3)
  return {k: 0.1 * jax.random.normal(kk, (H_SINE,)) for k, kk in zip("wba", keys)}


class _SineDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1, use_bias=False)(nn.tanh(nn.Dense(H_SINE)(x[:, None])))[:, 0]


def sine_forms():
  """name -> (params, loss(params, data)); data = (theta, target)."""
  p = _sine_params()
  mse = lambda f, y: jnp.mean((f - y) ** 2)

  def matmul(p, d):
    x, y = d
    return mse(jnp.tanh(x[:, None] @ p["w"][None, :] + p["b"][None, :]) @ p["a"], y)

  def einsum(p, d):
    x, y = d
    h = jnp.tanh(jnp.einsum("n,h->nh", x, p["w"]) + p["b"][None, :])
    return mse(jnp.einsum("nh,h->n", h, p["a"]), y)

  def broadcast(p, d):
    x, y = d
    h = jnp.tanh(x[:, None] * p["w"][None, :] + p["b"][None, :])
    return mse(jnp.sum(h * p["a"][None, :], axis=1), y)

  def per_point(p, d):
    x, y = d
    f = jax.vmap(lambda xi: jnp.sum(p["a"] * jnp.tanh(xi * p["w"] + p["b"])))(x)
    return mse(f, y)

  def scan_units(p, d):
    x, y = d

    def unit(f, wba):
      w, b, a = wba
      return f + a * jnp.tanh(x * w + b), None

    f, _ = jax.lax.scan(unit, jnp.zeros_like(x), (p["w"], p["b"], p["a"]))
    return mse(f, y)

  model = _SineDense()
  flax_params = model.init(jax.random.key(0), jnp.zeros((1,)))

  def flax_dense(p, d):
    x, y = d
    return mse(model.apply(p, x), y)

  forms = {"flax Dense": (flax_params, flax_dense)}
  for name, fn in (("matmul", matmul), ("einsum", einsum), ("broadcast", broadcast),
                   ("per-example vmap", per_point), ("lax.scan over units", scan_units)):
    forms[name] = (p, fn)
  return forms, _sine_data()


def _mlp_data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N_MLP, D_IN)).astype(np.float32)
  y = np.sin(x[:, :1] * 2.0 + x[:, 1:2]).astype(np.float32)[:, 0]
  return jnp.asarray(x), jnp.asarray(y)


def _mlp_params():
  keys = jax.random.split(jax.random.key(1), 3)
  return {
      "w_in": jax.random.normal(keys[0], (D_IN, H_MLP)) / np.sqrt(D_IN),
      "b_in": jnp.zeros((H_MLP,)),
      "w_hid": jax.random.normal(keys[1], (LAYERS - 1, H_MLP, H_MLP)) / np.sqrt(H_MLP),
      "b_hid": jnp.zeros((LAYERS - 1, H_MLP)),
      "w_out": jax.random.normal(keys[2], (H_MLP,)) / np.sqrt(H_MLP),
  }


class _MLPDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    for _ in range(LAYERS):
      x = nn.tanh(nn.Dense(H_MLP)(x))
    return nn.Dense(1, use_bias=False)(x)[:, 0]


def mlp_forms():
  p = _mlp_params()
  mse = lambda f, y: jnp.mean((f - y) ** 2)

  def layers(p, x, dot):
    h = jnp.tanh(dot(x, p["w_in"]) + p["b_in"][None, :])
    for i in range(LAYERS - 1):
      h = jnp.tanh(dot(h, p["w_hid"][i]) + p["b_hid"][i][None, :])
    return h

  def matmul(p, d):
    x, y = d
    return mse(layers(p, x, jnp.matmul) @ p["w_out"], y)

  def einsum(p, d):
    x, y = d
    dot = lambda a, w: jnp.einsum("ni,ij->nj", a, w)
    return mse(jnp.einsum("nj,j->n", layers(p, x, dot), p["w_out"]), y)

  def broadcast(p, d):
    x, y = d
    dot = lambda a, w: jnp.sum(a[:, :, None] * w[None, :, :], axis=1)
    return mse(jnp.sum(layers(p, x, dot) * p["w_out"][None, :], axis=1), y)

  def per_example(p, d):
    x, y = d

    def one(xi):
      h = jnp.tanh(xi @ p["w_in"] + p["b_in"])
      for i in range(LAYERS - 1):
        h = jnp.tanh(h @ p["w_hid"][i] + p["b_hid"][i])
      return h @ p["w_out"]

    return mse(jax.vmap(one)(x), y)

  def scan_layers(p, d):
    x, y = d
    h = jnp.tanh(x @ p["w_in"] + p["b_in"][None, :])

    def layer(h, wb):
      w, b = wb
      return jnp.tanh(h @ w + b[None, :]), None

    h, _ = jax.lax.scan(layer, h, (p["w_hid"], p["b_hid"]))
    return mse(h @ p["w_out"], y)

  model = _MLPDense()
  flax_params = model.init(jax.random.key(1), jnp.zeros((1, D_IN)))

  def flax_dense(p, d):
    x, y = d
    return mse(model.apply(p, x), y)

  forms = {"flax Dense": (flax_params, flax_dense)}
  for name, fn in (("matmul", matmul), ("einsum", einsum), ("broadcast", broadcast),
                   ("per-example vmap", per_example), ("lax.scan over layers", scan_layers)):
    forms[name] = (p, fn)
  return forms, _mlp_data()


def gaussian_1000():
  """A 1000-d standard Gaussian energy, U = |x|^2 / 2 (no data)."""
  return jnp.zeros(1000), (lambda p, d: 0.5 * jnp.sum(p * p)), ()
