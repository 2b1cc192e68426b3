"""Signal norm (Section III B, Eqs. 11-18): closed forms, structure, fusion.

The reference values are computed here in NumPy from the definitions: for a
weight into neuron j, lambda = (mean over evaluations alpha of the sum over the
inputs i' of j of S_{alpha i'}^2)^(-1/2); biases 1; no signal gives 0.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import amc_jax


def np_lambda(mean_sumsq):
  mean_sumsq = np.asarray(mean_sumsq, np.float64)
  return np.where(mean_sumsq > 0, 1.0 / np.sqrt(np.where(mean_sumsq > 0, mean_sumsq, 1)), 0.0)


def data(shape, seed=0):
  return np.asarray(np.random.default_rng(seed).normal(size=shape), np.float32)


# ---------------------------------------------------------------------------
# Closed forms.
# ---------------------------------------------------------------------------


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(5)(x))
    return nn.Dense(2)(x)


def test_dense_layers_match_the_formula_computed_by_hand():
  x = data((7, 3))
  model = MLP()
  params = model.init(jax.random.key(0), x)["params"]
  _, scales = amc_jax.signal_norm_apply(model, params, x)

  # Layer 0: the inputs of every neuron are the 3 input features.
  lam0 = np_lambda(np.mean(np.sum(x.astype(np.float64) ** 2, axis=1)))
  # Layer 1: the inputs are the 5 hidden activations, recomputed in NumPy.
  w0 = np.asarray(params["Dense_0"]["kernel"], np.float64)
  b0 = np.asarray(params["Dense_0"]["bias"], np.float64)
  h = np.tanh(x.astype(np.float64) @ w0 + b0)
  lam1 = np_lambda(np.mean(np.sum(h**2, axis=1)))

  np.testing.assert_allclose(scales["Dense_0"]["kernel"], np.full((3, 5), lam0), rtol=1e-5)
  np.testing.assert_allclose(scales["Dense_1"]["kernel"], np.full((5, 2), lam1), rtol=1e-5)
  np.testing.assert_array_equal(scales["Dense_0"]["bias"], np.ones(5))
  np.testing.assert_array_equal(scales["Dense_1"]["bias"], np.ones(2))


def test_all_zero_inputs_give_lambda_zero():
  model = nn.Dense(4)
  x = np.zeros((6, 3), np.float32)
  params = model.init(jax.random.key(0), x)["params"]
  _, scales = amc_jax.signal_norm_apply(model, params, x)
  np.testing.assert_array_equal(scales["kernel"], np.zeros((3, 4)))
  np.testing.assert_array_equal(scales["bias"], np.ones(4))


def np_conv_mean_sumsq(x, kernel_size, strides, pads, dilation, groups, c_out):
  """Mean over data and output positions of the receptive field's sum of squares,
  per output channel, with explicit zero padding and loops."""
  x = np.asarray(x, np.float64)
  n, h, w, c = x.shape
  xp = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
  kh, kw = kernel_size
  sh, sw = strides
  dh, dw = dilation
  out_h = (xp.shape[1] - ((kh - 1) * dh + 1)) // sh + 1
  out_w = (xp.shape[2] - ((kw - 1) * dw + 1)) // sw + 1
  cg = c // groups
  per_group = np.zeros(groups)
  for g in range(groups):
    total = 0.0
    for i in range(out_h):
      for j in range(out_w):
        for a in range(kh):
          for b in range(kw):
            patch = xp[:, i * sh + a * dh, j * sw + b * dw, g * cg : (g + 1) * cg]
            total += np.sum(patch**2)
    per_group[g] = total / (n * out_h * out_w)
  return np.repeat(per_group, c_out // groups)


def same_pads(size, k, s, d):
  out = -(-size // s)
  total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
  return (total // 2, total - total // 2)


@pytest.mark.parametrize(
    "kernel_size, strides, padding, dilation, groups",
    [
        ((3, 3), (1, 1), "VALID", (1, 1), 1),
        ((3, 3), (2, 2), "SAME", (1, 1), 1),
        ((2, 3), (1, 2), "SAME", (2, 1), 2),
        ((3, 3), (1, 1), ((1, 0), (2, 1)), (1, 1), 1),
    ],
)
def test_conv_matches_the_receptive_field_formula(kernel_size, strides, padding, dilation, groups):
  x = data((2, 7, 6, 4), seed=1)
  x[1, :, :, :2] = 0.0  # some inputs silent, so groups differ
  model = nn.Conv(
      6, kernel_size, strides=strides, padding=padding, kernel_dilation=dilation,
      feature_group_count=groups,
  )
  params = model.init(jax.random.key(0), x)["params"]
  _, scales = amc_jax.signal_norm_apply(model, params, x)
  if padding == "VALID":
    pads = [(0, 0), (0, 0)]
  elif padding == "SAME":
    pads = [same_pads(s, k, st, d) for s, k, st, d in zip(x.shape[1:3], kernel_size, strides, dilation)]
  else:
    pads = list(padding)
  expected = np_lambda(np_conv_mean_sumsq(x, kernel_size, strides, pads, dilation, groups, 6))
  assert scales["kernel"].shape == params["kernel"].shape
  np.testing.assert_allclose(
      scales["kernel"], np.broadcast_to(expected, params["kernel"].shape), rtol=1e-5
  )
  np.testing.assert_array_equal(scales["bias"], np.ones(6))


def test_conv_circular_padding_wraps_the_signal():
  x = data((3, 5, 4), seed=2)  # 1-D conv: (batch, length, channels)
  model = nn.Conv(2, (3,), padding="CIRCULAR")
  params = model.init(jax.random.key(0), x)["params"]
  _, scales = amc_jax.signal_norm_apply(model, params, x)
  # Circular padding: every output sees 3 real (wrapped) positions.
  expected = np_lambda(3 * np.mean(np.sum(x.astype(np.float64) ** 2, axis=-1)))
  np.testing.assert_allclose(scales["kernel"], np.full((3, 4, 2), expected), rtol=1e-5)


def test_conv_with_a_silent_group_gets_lambda_zero_there():
  x = data((2, 5, 5, 4), seed=3)
  x[..., 2:] = 0.0
  model = nn.Conv(4, (3, 3), feature_group_count=2)
  params = model.init(jax.random.key(0), x)["params"]
  _, scales = amc_jax.signal_norm_apply(model, params, x)
  k = np.asarray(scales["kernel"])
  assert np.all(k[..., :2] > 0) and np.all(k[..., 2:] == 0)


def test_dense_general_with_batch_dims_and_einsum():
  x = data((5, 3, 4), seed=4)  # (data, heads, features)
  x[:, 2] = 0.0
  xt = np.transpose(x, (1, 0, 2))  # batch_dims must lead: (heads, data, features)
  dg = nn.DenseGeneral(features=6, axis=-1, batch_dims=(0,))
  params = dg.init(jax.random.key(0), xt)["params"]
  _, scales = amc_jax.signal_norm_apply(dg, params, xt)
  per_head = np_lambda(np.mean(np.sum(x.astype(np.float64) ** 2, axis=-1), axis=0))  # (3,)
  np.testing.assert_allclose(
      scales["kernel"], np.broadcast_to(per_head[:, None, None], (3, 4, 6)), rtol=1e-5
  )

  # Contracting two axes: every output neuron sees 3 x 4 inputs.
  dg2 = nn.DenseGeneral(features=2, axis=(-2, -1))
  params = dg2.init(jax.random.key(0), x)["params"]
  _, scales = amc_jax.signal_norm_apply(dg2, params, x)
  both = np_lambda(np.mean(np.sum(x.astype(np.float64) ** 2, axis=(1, 2))))
  np.testing.assert_allclose(scales["kernel"], np.full((3, 4, 2), both), rtol=1e-5)

  # Einsum 'bhd,hdk->bhk': neuron (h, k) sees the d features of head h.
  es = nn.Einsum((3, 4, 2), "bhd,hdk->bhk")
  params = es.init(jax.random.key(0), x)["params"]
  _, scales = amc_jax.signal_norm_apply(es, params, x)
  np.testing.assert_allclose(
      scales["kernel"], np.broadcast_to(per_head[:, None, None], (3, 4, 2)), rtol=1e-5
  )
  np.testing.assert_array_equal(scales["bias"], np.ones_like(params["bias"]))


def test_gru_lambdas_average_over_data_and_time_steps():
  x = data((4, 6, 3), seed=5)  # (batch, time, features)
  model = nn.RNN(nn.GRUCell(5))
  variables = model.init(jax.random.key(0), x)
  hs, scales = amc_jax.signal_norm_apply(model, variables, x)
  scales = scales["params"]["cell"]
  x64 = x.astype(np.float64)
  lam_in = np_lambda(np.mean(np.sum(x64**2, axis=-1)))  # over batch and time
  # The hidden-to-hidden layers see h_{t-1}: the zero initial carry, then h_0..h_{T-2}.
  h = np.asarray(hs, np.float64)
  prev = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
  lam_h = np_lambda(np.mean(np.sum(prev**2, axis=-1)))
  for name in ("ir", "iz", "in"):
    np.testing.assert_allclose(scales[name]["kernel"], np.full((3, 5), lam_in), rtol=1e-5)
  for name in ("hr", "hz", "hn"):
    np.testing.assert_allclose(scales[name]["kernel"], np.full((5, 5), lam_h), rtol=1e-5)
  for name in ("ir", "iz", "in", "hn"):
    np.testing.assert_array_equal(scales[name]["bias"], np.ones(5))


def test_nnx_layers_match_the_linen_layers():
  x = data((7, 6, 6, 2), seed=6)
  lconv = nn.Conv(3, (3, 3), strides=(2, 2))
  lp = lconv.init(jax.random.key(0), x)["params"]
  _, ls = amc_jax.signal_norm_apply(lconv, lp, x)
  nconv = nnx.Conv(2, 3, (3, 3), strides=(2, 2), rngs=nnx.Rngs(0))
  _, ns = amc_jax.signal_norm_apply(nconv, x)
  np.testing.assert_allclose(ns["kernel"][...], ls["kernel"], rtol=1e-6)
  np.testing.assert_array_equal(ns["bias"][...], np.ones(3))

  xe = data((5, 3, 4), seed=7)
  es = nnx.Einsum("bhd,hdk->bhk", (3, 4, 2), (3, 2), rngs=nnx.Rngs(0))
  _, s = amc_jax.signal_norm_apply(es, xe)
  per_head = np_lambda(np.mean(np.sum(xe.astype(np.float64) ** 2, axis=-1), axis=0))
  np.testing.assert_allclose(
      s["kernel"][...], np.broadcast_to(per_head[:, None, None], (3, 4, 2)), rtol=1e-5
  )


# ---------------------------------------------------------------------------
# Structure, shapes and dtypes for an MLP, a CNN and a GRU, linen and nnx.
# ---------------------------------------------------------------------------


class CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


class GRU(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.RNN(nn.GRUCell(6))(x)
    return nn.Dense(2)(h[:, -1])


class NnxMLP(nnx.Module):
  def __init__(self, rngs, dtype=jnp.float32):
    self.l1 = nnx.Linear(3, 8, rngs=rngs, param_dtype=dtype)
    self.l2 = nnx.Linear(8, 2, rngs=rngs, param_dtype=dtype)

  def __call__(self, x):
    return self.l2(jnp.tanh(self.l1(x)))


class NnxCNN(nnx.Module):
  def __init__(self, rngs):
    self.c1 = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.c2 = nnx.Conv(4, 8, (3, 3), strides=(2, 2), rngs=rngs)
    self.out = nnx.Linear(8 * 4 * 4, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.c2(nnx.relu(self.c1(x))))
    return self.out(x.reshape(x.shape[0], -1))


class NnxGRU(nnx.Module):
  """A GRU cell applied in a Python loop over time steps."""

  def __init__(self, rngs):
    self.cell = nnx.GRUCell(3, 6, rngs=rngs)
    self.out = nnx.Linear(6, 2, rngs=rngs)

  def __call__(self, x):
    h = jnp.zeros((x.shape[0], 6), x.dtype)
    for t in range(x.shape[1]):
      h, _ = self.cell(h, x[:, t])
    return self.out(h)


def assert_like(scales, params):
  assert jax.tree_util.tree_structure(scales) == jax.tree_util.tree_structure(params)
  for s, p in zip(jax.tree_util.tree_leaves(scales), jax.tree_util.tree_leaves(params)):
    assert s.shape == p.shape and s.dtype == p.dtype
    assert np.all(np.isfinite(np.asarray(s, np.float32)))


LINEN_CASES = {
    "mlp": (MLP, (4, 3)),
    "cnn": (CNN, (2, 8, 8, 1)),
    "gru": (GRU, (3, 5, 3)),
}


@pytest.mark.parametrize(
    "name, dtype",
    [(name, jnp.float32) for name in LINEN_CASES] + [("mlp", jnp.bfloat16), ("cnn", jnp.bfloat16)],
)
def test_linen_scales_have_the_structure_shapes_and_dtypes_of_the_params(name, dtype):
  cls, shape = LINEN_CASES[name]
  model = cls()
  x = jnp.asarray(data(shape))
  variables = model.init(jax.random.key(0), x)
  variables = jax.tree_util.tree_map(lambda p: p.astype(dtype), variables)
  x = x.astype(dtype)  # flax would promote mixed inputs, which strict promotion forbids
  # As the variables dict, and as the "params" collection alone.
  _, scales = amc_jax.signal_norm_apply(model, variables, x)
  assert_like(scales, variables)
  _, scales = amc_jax.signal_norm_apply(model, variables["params"], x)
  assert_like(scales, variables["params"])
  kernels = [s for p, s in jax.tree_util.tree_leaves_with_path(scales) if "kernel" in str(p)]
  assert kernels and all(np.all(np.asarray(k, np.float32) > 0) for k in kernels)


@pytest.mark.parametrize(
    "make, shape", [(NnxMLP, (4, 3)), (NnxCNN, (2, 8, 8, 1)), (NnxGRU, (3, 5, 3))],
    ids=["mlp", "cnn", "gru"],
)
def test_nnx_scales_have_the_structure_shapes_and_dtypes_of_the_params(make, shape):
  model = make(nnx.Rngs(0))
  x = jnp.asarray(data(shape))
  _, scales = amc_jax.signal_norm_apply(model, x)
  params = nnx.state(model, nnx.Param)
  assert_like(scales, params)
  # The model is left as it was: no recording hooks remain.
  for _, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Linear):
      assert node.dot_general is jax.lax.dot_general
    if isinstance(node, nnx.Conv):
      assert node.conv_general_dilated is jax.lax.conv_general_dilated


def test_nnx_gru_matches_the_linen_gru_formula():
  x = data((4, 6, 3), seed=8)
  model = NnxGRU(nnx.Rngs(0))
  _, scales = amc_jax.signal_norm_apply(model, jnp.asarray(x))
  lam_in = np_lambda(np.mean(np.sum(x.astype(np.float64) ** 2, axis=-1)))
  np.testing.assert_allclose(scales["cell"]["dense_i"]["kernel"][...], np.full((3, 18), lam_in), rtol=1e-5)


# ---------------------------------------------------------------------------
# What the method cannot handle is named, never silently wrong.
# ---------------------------------------------------------------------------


class WithEmbed(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    return nn.Dense(2)(nn.Embed(10, 4)(tokens))


def test_unsupported_layers_are_named_and_keep_lambda_one():
  tokens = jnp.arange(6).reshape(2, 3)
  model = WithEmbed()
  params = model.init(jax.random.key(0), tokens)["params"]
  with pytest.warns(amc_jax.SignalNormWarning, match="Embed_0/embedding"):
    _, scales = amc_jax.signal_norm_apply(model, params, tokens)
  np.testing.assert_array_equal(scales["Embed_0"]["embedding"], np.ones((10, 4)))
  assert np.all(np.asarray(scales["Dense_0"]["kernel"]) != 1)
  with pytest.raises(ValueError, match="Embed_0/embedding"):
    amc_jax.signal_norm_apply(model, params, tokens, unsupported="error")
  amc_jax.signal_norm_apply(model, params, tokens, unsupported="ignore")  # silent
  with pytest.raises(ValueError, match="unsupported must be one of"):
    amc_jax.signal_norm_apply(model, params, tokens, unsupported="maybe")


class UserScan(nn.Module):
  @nn.compact
  def __call__(self, x):
    scan = nn.scan(
        lambda cell, c, xs: cell(c, xs), variable_broadcast="params",
        split_rngs={"params": False}, in_axes=1, out_axes=1,
    )
    cell = nn.SimpleCell(4)
    carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)
    _, ys = scan(cell, carry, x)
    return ys


def test_a_lifted_scan_that_drops_the_statistics_is_an_error():
  x = jnp.asarray(data((2, 5, 3)))
  model = UserScan()
  params = model.init(jax.random.key(0), x)["params"]
  with pytest.raises(ValueError, match="variable_axes"):
    amc_jax.signal_norm_apply(model, params, x)


def test_nnx_rnn_is_a_clear_error():
  model = nnx.RNN(nnx.SimpleCell(3, 4, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="nnx.scan"):
    amc_jax.signal_norm_apply(model, jnp.asarray(data((2, 5, 3))))


def test_bad_arguments():
  with pytest.raises(TypeError, match="flax.linen.Module or a flax.nnx.Module"):
    amc_jax.signal_norm_apply(lambda x: x, jnp.ones(3))
  with pytest.raises(TypeError, match="loss_fn must be callable"):
    amc_jax.signal_norm_value_fn(MLP(), 3)
  tx = amc_jax.amc(0.1, signal_norm=True)
  params = jnp.ones(3)
  state = tx.init(params)
  with pytest.raises(TypeError, match="must return a pair"):
    tx.update(None, state, params, value_fn=lambda p: jnp.sum(p**2))
  with pytest.raises(TypeError, match="must return a pair"):
    tx.update(None, state, params, value_fn=lambda p: (jnp.sum(p**2), p), value=1.0)
  with pytest.raises(ValueError, match="same pytree structure"):
    tx.update(None, state, params, value_fn=lambda p: (jnp.sum(p**2), {"a": p}))
  with pytest.raises(TypeError, match="signal_norm must be a bool"):
    amc_jax.amc(0.1, signal_norm=1)


# ---------------------------------------------------------------------------
# The step: lambdas of the current params, fused with the loss.
# ---------------------------------------------------------------------------


def test_the_move_uses_the_lambdas_of_the_current_params():
  x = jnp.asarray(data((16, 3), seed=9))
  y = jnp.asarray(data((16, 2), seed=10))
  model = MLP()
  params = model.init(jax.random.key(0), x)["params"]
  mse = lambda out, y: jnp.mean((out - y) ** 2)
  value_fn = amc_jax.signal_norm_value_fn(model, mse)
  sigma0 = 0.05
  tx = amc_jax.amc(sigma0, epsilon=0.0, n_reset=1000, signal_norm=True, seed=3)
  state = tx.init(params)
  step = jax.jit(lambda s, p: tx.update(None, s, p, value_fn=lambda q: value_fn(q, x, y)))
  accepted = 0
  for _ in range(30):
    _, lam = amc_jax.signal_norm_apply(model, params, x)
    _, proposal_key, _ = jax.random.split(state.key, 3)
    z = amc_jax.standard_normal_like(proposal_key, params)
    updates, state = step(state, params)
    expected = jax.tree_util.tree_map(
        lambda l, zz: np.where(bool(state.info.accepted), sigma0 * np.asarray(l) * np.asarray(zz), 0.0),
        lam, z,
    )
    jax.tree_util.tree_map(
        lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-5, atol=1e-12), updates, expected
    )
    accepted += int(state.info.accepted)
    params = optax.apply_updates(params, updates)
    # The cached lambdas are those of the new current params.
    _, fresh = amc_jax.signal_norm_apply(model, params, x)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), state.scales, fresh
    )
  assert 0 < accepted < 30


class CountedMLP(nn.Module):
  """An MLP that reports every forward pass to the host."""

  @nn.compact
  def __call__(self, x):
    out = MLP()(x)
    # On an output, so that under vmap it runs once per chain.
    jax.debug.callback(lambda _: CALLS.append(1), out[0, 0])
    return out


CALLS = []


@pytest.mark.parametrize("n_chains", [None, 3])
def test_batch_mode_with_signal_norm_costs_one_forward_pass_per_step(n_chains):
  x = jnp.asarray(data((8, 3), seed=11))
  y = jnp.asarray(data((8, 2), seed=12))
  model = CountedMLP()
  value_fn = amc_jax.signal_norm_value_fn(model, lambda o, y: jnp.mean((o - y) ** 2))
  tx = amc_jax.amc(0.05, epsilon=0.1, signal_norm=True)
  update = lambda p, s: tx.update(None, s, p, value_fn=lambda q: value_fn(q, x, y))
  init = lambda k: model.init(k, x)["params"]
  if n_chains is None:
    params = init(jax.random.key(0))
    state = tx.init(params)
  else:
    params = jax.vmap(init)(jax.random.split(jax.random.key(0), n_chains))
    state = amc_jax.init_ensemble(tx, params, 0)
    update = jax.vmap(update)
  step = jax.jit(update)
  per_step = []
  jax.effects_barrier()
  CALLS.clear()  # model.init ran the model too
  for _ in range(5):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    jax.effects_barrier()
    per_step.append(len(CALLS))
    CALLS.clear()
  m = 1 if n_chains is None else n_chains
  assert per_step == [2 * m] + [m] * 4


def test_fit_with_signal_norm_trains_a_deep_narrow_net_that_plain_amc_cannot():
  # Fig. 6 in miniature: depth 12, step function target, N(0, 1e-4) init.
  class Deep(nn.Module):
    @nn.compact
    def __call__(self, x):
      init = nn.initializers.normal(1e-2)
      for _ in range(10):
        x = nn.tanh(nn.Dense(4, kernel_init=init, bias_init=init)(x))
      x = nn.tanh(nn.Dense(10, kernel_init=init, bias_init=init)(x))
      return nn.Dense(1, kernel_init=init, bias_init=init)(x)

  theta = jnp.linspace(0.0, 1.0, 200)[:, None]
  target = jnp.where((theta > 0.5) & (theta < 0.75), 0.5, 0.0)
  model = Deep()
  params = model.init(jax.random.key(0), theta)["params"]
  mse = lambda out, y: jnp.mean((out - y) ** 2)
  value_fn = amc_jax.signal_norm_value_fn(model, mse)
  baseline = float(jnp.var(target))
  finals = {}
  for on in (True, False):
    tx = amc_jax.amc(1e-2, epsilon=1e-2, n_reset=100, signal_norm=on, seed=0)
    loss_fn = (lambda p, b: value_fn(p, *b)) if on else (lambda p, b: mse(model.apply({"params": p}, b[0]), b[1]))
    result = amc_jax.fit(tx, params, loss_fn, (theta, target), steps=4000, progress=False)
    finals[on] = float(result.history["loss"][-1])
  assert finals[True] < 0.5 * baseline
  assert finals[False] > 0.9 * baseline


def test_nnx_optimizer_with_signal_norm():
  x = jnp.asarray(data((16, 3), seed=13))
  y = jnp.asarray(data((16, 2), seed=14))
  model = NnxMLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, amc_jax.amc(0.05, 0.05, signal_norm=True), wrt=nnx.Param)
  mse = lambda out, y: jnp.mean((out - y) ** 2)
  loss0 = float(mse(model(x), y))

  @nnx.jit
  def train_step(model, optimizer):
    value_fn = amc_jax.signal_norm_value_fn(model, mse)
    optimizer.update(model, None, value_fn=lambda p: value_fn(p, x, y))

  for _ in range(100):
    train_step(model, optimizer)
  assert float(mse(model(x), y)) < loss0
  _, fresh = amc_jax.signal_norm_apply(model, x)
  cached = jax.tree_util.tree_leaves(optimizer.opt_state.scales)  # OptVariables
  fresh = jax.tree_util.tree_leaves(fresh)
  assert len(cached) == len(fresh) == 4
  for a, b in zip(cached, fresh):
    np.testing.assert_allclose(a, b, rtol=1e-5)
