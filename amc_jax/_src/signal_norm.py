"""Signal norm (Section III B of Whitelam et al. 2022) for flax models.

For a weight :math:`x_i` feeding neuron :math:`j`, signal norm sets the step
size multiplier

.. math::
  \\lambda_i = \\Big(N_\\text{data}^{-1} \\sum_\\alpha \\sum_{i' \\to j}
  S_{\\alpha i'}^2\\Big)^{-1/2} \\quad \\text{(Eq. 17)}

from the signals :math:`S_{\\alpha i'}` entering neuron :math:`j`, averaged
over every evaluation :math:`\\alpha` of the layer (data points, sequence
positions, time steps); biases get :math:`\\lambda = 1` (Eq. 18) and a neuron
whose inputs are all zero gets :math:`\\lambda = 0`.

The statistic is recorded while the model runs, from the very inputs of each
layer's ``dot_general``, ``conv_general_dilated`` or ``einsum``, so the
lambdas cost no extra forward pass: one call of the model gives the outputs
(hence the loss) and the lambdas. Recording hooks into flax's own
overridable operations (``Dense.dot_general`` and friends) rather than
re-implementing each layer, so padding modes, dilations, feature groups and
dtype promotion are exactly those of the layer.

Everything here is outside the step: :func:`amc_jax.amc` only sees a
``value_fn`` that returns ``(loss, scales)``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any

#: Name of the flax.linen collection the recorded statistics are sown into.
COLLECTION = "signal_norm"

_UNSUPPORTED_MODES = ("warn", "error", "ignore")


class SignalNormWarning(UserWarning):
  """Some parameters got lambda = 1 because no signal-norm rule covers them.

  Examples:
    An ``Embed`` table has no signal-norm rule, so it keeps lambda = 1 and is
    named in this warning:

    >>> import warnings, flax.linen as nn, jax, jax.numpy as jnp, amc_jax
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, tokens):
    ...     return nn.Dense(1)(nn.Embed(10, 4)(tokens))
    >>> model, tokens = Net(), jnp.zeros(3, jnp.int32)
    >>> params = model.init(jax.random.key(0), tokens)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _, lambdas = amc_jax.signal_norm_apply(model, params, tokens)
    >>> caught[0].category.__name__, float(lambdas["params"]["Embed_0"]["embedding"].max())
    ('SignalNormWarning', 1.0)
  """


# ---------------------------------------------------------------------------
# The statistic of Eq. (17), computed from the arguments of the layer's own
# linear operation. Each returns (sum over evaluations alpha of the sum over
# the inputs i' of neuron j of S_{alpha i'}^2, number of evaluations), the sum
# laid out to broadcast against the kernel (size 1 along the kernel's input
# axes: every weight into neuron j shares its lambda).
# ---------------------------------------------------------------------------


def _squares(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  # Accumulate in float32 at least (bfloat16 inputs), float64 when given.
  wide = jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32
  dtype = x.dtype if wide else jnp.dtype(jnp.float32)
  x = lax.stop_gradient(x).astype(dtype)
  return x * x


# Inputs of at least this many values are summed as a dot product (see below).
_DOT_SUM_MIN_SIZE = 1 << 16


def _dot_general_stat(lhs, rhs_shape, dimension_numbers):
  """``lax.dot_general(lhs, kernel, dimension_numbers)`` (Dense, DenseGeneral)."""
  (lc, rc), (lb, rb) = dimension_numbers
  lc, rc, lb, rb = (tuple(int(a) for a in t) for t in (lc, rc, lb, rb))
  if not lb and np.prod(jnp.shape(lhs), dtype=np.int64) >= _DOT_SUM_MIN_SIZE:
    # No batch axes (Dense), many inputs: one sum of squares over every input
    # value, as a dot product. XLA:CPU computes a large plain reduction
    # several times slower than a dot (10x with the workaround flag for jax
    # issue 39103), and for a first layer this is a pass over the whole data
    # set per step. Small ones stay reductions, fused with their neighbours
    # (a dot is a library call per layer: slower for a deep narrow net).
    flat = lax.stop_gradient(jnp.asarray(lhs)).reshape(-1)
    wide = jnp.issubdtype(flat.dtype, jnp.floating) and jnp.finfo(flat.dtype).bits >= 32
    flat = flat if wide else flat.astype(jnp.float32)
    s = jnp.dot(flat, flat, precision=lax.Precision.HIGHEST)
    n = int(np.prod([lhs.shape[a] for a in range(jnp.ndim(lhs)) if a not in lc], dtype=np.int64))
    return s.reshape([1] * len(rhs_shape)), n
  x2 = _squares(lhs)
  free = [a for a in range(x2.ndim) if a not in lc and a not in lb]
  # Batch axes first (in the order paired with the kernel's), then the rest,
  # which are summed: contracted axes are the inputs of a neuron, free axes
  # are evaluations alpha.
  x2 = jnp.transpose(x2, lb + tuple(a for a in range(x2.ndim) if a not in lb))
  s = jnp.sum(x2, axis=tuple(range(len(lb), x2.ndim)))
  n = int(np.prod([lhs.shape[a] for a in free], dtype=np.int64))
  order = np.argsort(rb)
  s = jnp.transpose(s, tuple(int(i) for i in order))
  layout = [1] * len(rhs_shape)
  for i in order:
    layout[rb[i]] = lhs.shape[lb[i]]
  return s.reshape(layout), n


def _conv_pads(lhs_spatial, window, strides, padding):
  if isinstance(padding, str):
    return lax.padtype_to_pads(lhs_spatial, window, strides, padding)
  return [tuple(int(p) for p in pair) for pair in padding]


def _conv_stat(
    lhs,
    rhs_shape,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    **unused,
):
  """``lax.conv_general_dilated`` (Conv): the receptive field of an output.

  The inputs of output channel ``o`` at one output position are the input
  pixels under the (dilated, strided, padded) window in the input channels of
  ``o``'s feature group; padding contributes zeros. The average is over data
  and output positions.
  """
  del unused
  dn = lax.conv_dimension_numbers(lhs.shape, rhs_shape, dimension_numbers)
  lhs_spec, rhs_spec, _ = dn
  n_spatial = len(lhs_spec) - 2
  window = tuple(int(rhs_shape[a]) for a in rhs_spec[2:])
  strides = tuple(window_strides) if window_strides is not None else (1,) * n_spatial
  lhs_dil = tuple(lhs_dilation) if lhs_dilation is not None else (1,) * n_spatial
  rhs_dil = tuple(rhs_dilation) if rhs_dilation is not None else (1,) * n_spatial
  x2 = _squares(lhs)
  # (N, spatial..., C) and the channels summed within each feature group.
  x2 = jnp.transpose(x2, (lhs_spec[0],) + tuple(lhs_spec[2:]) + (lhs_spec[1],))
  g = int(feature_group_count)
  x2 = x2.reshape(x2.shape[:-1] + (g, x2.shape[-1] // g)).sum(-1)
  spatial = x2.shape[1:-1]
  dilated_window = [(k - 1) * d + 1 for k, d in zip(window, rhs_dil)]
  pads = _conv_pads(spatial, dilated_window, strides, padding)  # as conv does
  windows = lax.reduce_window(
      x2,
      np.array(0, x2.dtype),
      lax.add,
      (1,) + window + (1,),
      (1,) + strides + (1,),
      [(0, 0)] + list(pads) + [(0, 0)],
      base_dilation=(1,) + lhs_dil + (1,),
      window_dilation=(1,) + rhs_dil + (1,),
  )
  s = jnp.sum(windows, axis=tuple(range(windows.ndim - 1)))  # (g,)
  n = int(np.prod(windows.shape[:-1], dtype=np.int64))
  c_out = int(rhs_shape[rhs_spec[0]])
  s = jnp.repeat(s, c_out // g)
  layout = [1] * len(rhs_shape)
  layout[rhs_spec[0]] = c_out
  return s.reshape(layout), n


class _Unsupported(Exception):
  """A call the statistics cannot be computed for (e.g. an ellipsis einsum)."""


def _einsum_stat(einsum_str, lhs, rhs_shape):
  """``jnp.einsum('<in>,<kernel>-><out>', inputs, kernel)`` (Einsum)."""
  spec = einsum_str.replace(" ", "")
  if "..." in spec or "->" not in spec or spec.count(",") != 1:
    raise _Unsupported(f"einsum {einsum_str!r} (needs 'in,kernel->out', no ellipsis)")
  ins, out = spec.split("->")
  a, k = ins.split(",")
  if len(set(a)) != len(a) or len(set(k)) != len(k) or len(a) != jnp.ndim(lhs):
    raise _Unsupported(f"einsum {einsum_str!r} (repeated labels)")
  shared = "".join(c for c in k if c in a and c in out)
  # Input labels not in the output are summed into each neuron's input;
  # input-only labels kept in the output index evaluations alpha.
  data = [c for c in a if c in out and c not in k]
  s = jnp.einsum(f"{a}->{shared}", _squares(lhs))
  # A kernel label summed away (in neither input nor output) repeats each
  # input signal once per index.
  repeat = int(np.prod([rhs_shape[i] for i, c in enumerate(k) if c not in a and c not in out]))
  n = int(np.prod([lhs.shape[a.index(c)] for c in data], dtype=np.int64))
  layout = [rhs_shape[i] if c in shared else 1 for i, c in enumerate(k)]
  return (s * repeat).reshape(layout), n


def _lambdas(total, count):
  """Eq. (17) from the accumulated statistic; 0 for a neuron with no signal."""
  mean = total / jnp.maximum(count, 1).astype(total.dtype)
  positive = mean > 0
  return jnp.where(
      positive, lax.rsqrt(jnp.where(positive, mean, jnp.ones_like(mean))), jnp.zeros_like(mean)
  )


# ---------------------------------------------------------------------------
# Paths and the final pytree of lambdas.
# ---------------------------------------------------------------------------


def _key_name(k) -> Any:
  if isinstance(k, jax.tree_util.DictKey):
    return k.key
  if isinstance(k, jax.tree_util.SequenceKey):
    return k.idx
  if isinstance(k, jax.tree_util.GetAttrKey):
    return k.name
  if isinstance(k, jax.tree_util.FlattenedIndexKey):
    return k.key
  return str(k)


def _names(path) -> tuple:
  names = tuple(_key_name(k) for k in path)
  # nnx.State leaves sit under a Variable's `.value`.
  if names and names[-1] == "value":
    names = names[:-1]
  return names


def _fmt(path: tuple) -> str:
  return "/".join(str(p) for p in path) or "<root>"


def _report(unsupported: str, uncovered: list[str]) -> None:
  if not uncovered or unsupported == "ignore":
    return
  msg = (
      "signal norm has no rule for the parameters "
      + ", ".join(uncovered)
      + ": they keep lambda = 1 (signal norm off). Rules exist for the kernels"
      " of Dense/Linear, DenseGeneral/LinearGeneral, Conv, Einsum and the"
      " recurrent cells built from them; biases always get lambda = 1. Pass"
      " unsupported='ignore' to silence this."
  )
  if unsupported == "error":
    raise ValueError(msg)
  warnings.warn(msg, SignalNormWarning, stacklevel=4)


def _build_scales(params: PyTree, stats: dict, unsupported: str) -> PyTree:
  """Lambdas like ``params``; ``stats`` maps a kernel's path to (sum, count)."""
  uncovered = []
  # Eq. (17) for all kernels at once, one computation per statistic shape:
  # on a CPU a deep stack of small layers pays per operation, not per flop.
  groups: dict = {}
  for names, (total, count) in stats.items():
    groups.setdefault((jnp.shape(total), jnp.result_type(total)), []).append(names)
  lam = {}
  for members in groups.values():
    totals = jnp.stack([stats[n][0] for n in members])
    counts = jnp.stack([jnp.asarray(stats[n][1], totals.dtype) for n in members])
    counts = counts.reshape(counts.shape + (1,) * (totals.ndim - 1))
    values = _lambdas(totals, counts)
    for i, n in enumerate(members):
      lam[n] = values[i]

  def one(path, leaf):
    names = _names(path)
    if names in lam:
      return jnp.broadcast_to(lam[names], jnp.shape(leaf)).astype(jnp.result_type(leaf))
    if not (names and names[-1] == "bias"):
      uncovered.append(_fmt(names))
    return jnp.ones_like(leaf)

  scales = jax.tree_util.tree_map_with_path(one, params)
  _report(unsupported, uncovered)
  return scales


def _check_unsupported(unsupported: str) -> None:
  if unsupported not in _UNSUPPORTED_MODES:
    raise ValueError(
        f"unsupported must be one of {_UNSUPPORTED_MODES}, got {unsupported!r}."
    )


# ---------------------------------------------------------------------------
# flax.linen: a method interceptor swaps the layer's linear operation for a
# recording one for the duration of the call, and sows the statistic into the
# COLLECTION collection, which lifted transforms (nn.scan in nn.RNN) carry
# out like any other collection.
# ---------------------------------------------------------------------------


def _sow(module, total, count) -> None:
  module.sow(
      COLLECTION,
      "kernel",
      (total, jnp.asarray(count, jnp.float32)),
      init_fn=lambda: None,
      reduce_fn=lambda acc, new: new
      if acc is None
      else jax.tree_util.tree_map(jnp.add, acc, new),
  )


@contextlib.contextmanager
def _swapped(obj, name: str, value):
  old = obj.__dict__.get(name, getattr(type(obj), name, None))
  had = name in obj.__dict__
  object.__setattr__(obj, name, value)
  try:
    yield
  finally:
    if had:
      object.__setattr__(obj, name, old)
    else:
      object.__delattr__(obj, name)


def _recording(stat_fn, original, record):
  def op(lhs, rhs, *args, **kwargs):
    total, count = stat_fn(lhs, jnp.shape(rhs), *args, **kwargs)
    record(total, count)
    return original(lhs, rhs, *args, **kwargs)

  return op


def _linen_interceptor(seen: set):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    record = lambda total, count: _sow(module, total, count)
    if isinstance(module, nn.RNN):
      # nn.RNN scans its cell with nn.scan: stack the sown statistics over
      # time (axis 0) instead of dropping them.
      axes = dict(module.variable_axes)
      axes.setdefault(COLLECTION, 0)
      with _swapped(module, "variable_axes", axes):
        return next_fun(*args, **kwargs)
    if isinstance(module, (nn.Dense, nn.DenseGeneral)) and module.dot_general_cls is None:
      seen.add(tuple(module.path))
      op = _recording(
          lambda lhs, shape, dims, **kw: _dot_general_stat(lhs, shape, dims),
          module.dot_general or lax.dot_general,
          record,
      )
      with _swapped(module, "dot_general", op):
        return next_fun(*args, **kwargs)
    if (
        isinstance(module, nn.Conv)
        and module.conv_general_dilated_cls is None
        and module.mask is None
    ):
      seen.add(tuple(module.path))
      op = _recording(_conv_stat, module.conv_general_dilated or lax.conv_general_dilated, record)
      with _swapped(module, "conv_general_dilated", op):
        return next_fun(*args, **kwargs)
    if isinstance(module, nn.Einsum):
      inputs = args[0] if args else kwargs["inputs"]
      einsum_str = args[1] if len(args) > 1 else kwargs.get("einsum_str")
      einsum_str = module.einsum_str if einsum_str is None else einsum_str
      out = next_fun(*args, **kwargs)
      kernel_shape = module.shape
      try:
        total, count = _einsum_stat(einsum_str, inputs, kernel_shape)
      except _Unsupported:
        return out
      seen.add(tuple(module.path))
      record(total, count)
      return out
    return next_fun(*args, **kwargs)

  return interceptor


def _linen_stats(collection: PyTree) -> dict:
  """{kernel path: (sum, count)} from the sown collection (time-stacked or not)."""
  stats = {}

  def visit(node, path):
    if isinstance(node, dict) or hasattr(node, "items"):
      for k, v in node.items():
        if k == "kernel" and isinstance(v, tuple) and len(v) == 2:
          total, count = v
          stats[path + ("kernel",)] = (total, count)
        else:
          visit(v, path + (k,))

  visit(collection, ())
  return stats


def _fold_stacked(total, count, kernel):
  """Sums the axes that lifted scans stacked in front of a statistic."""
  extra = jnp.ndim(total) - jnp.ndim(kernel)
  if extra > 0:
    total = jnp.sum(total, axis=tuple(range(extra)))
  return total, jnp.sum(count)


def _linen_apply(model, params, args, kwargs, unsupported):
  if "mutable" in kwargs:
    raise TypeError(
        "signal_norm_apply runs model.apply itself with the signal-norm"
        " collection mutable; it takes no mutable= argument."
    )
  full = isinstance(params, dict) or hasattr(params, "items")
  variables = params if (full and "params" in params) else {"params": params}
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  seen: set = set()
  with nn.intercept_methods(_linen_interceptor(seen)):
    out, sown = model.apply(variables, *args, mutable=[COLLECTION], **kwargs)
  raw = _linen_stats(sown.get(COLLECTION, {}))
  lost = sorted(_fmt(p) for p in seen if p + ("kernel",) not in raw)
  if lost:
    raise ValueError(
        "signal norm recorded the inputs of "
        + ", ".join(lost)
        + " but they never reached the output: the layers ran inside a lifted"
        f" transform that drops the {COLLECTION!r} collection. Pass"
        f" variable_axes={{{COLLECTION!r}: 0}} to nn.scan (nn.RNN is handled"
        " automatically)."
    )
  prefix = ("params",) if variables is params else ()
  leaves = dict(
      (_names(p), leaf)
      for p, leaf in jax.tree_util.tree_leaves_with_path(variables.get("params", {}))
  )
  stats = {}
  for path, (total, count) in raw.items():
    if path in leaves:
      stats[prefix + path] = _fold_stacked(total, count, leaves[path])

  def scales_of(tree, tree_prefix):
    return _build_scales_prefixed(tree, stats, tree_prefix, unsupported)

  if variables is params:
    scales = {
        k: scales_of(v, (k,)) if k == "params" else jax.tree_util.tree_map(jnp.ones_like, v)
        for k, v in params.items()
    }
    scales = type(params)(scales) if not isinstance(params, dict) else scales
  else:
    scales = scales_of(params, ())
  return out, scales


def _build_scales_prefixed(tree, stats, prefix, unsupported):
  shifted = {p[len(prefix):]: v for p, v in stats.items() if p[: len(prefix)] == prefix}
  return _build_scales(tree, shifted, unsupported)


# ---------------------------------------------------------------------------
# flax.nnx: the same recording operations, installed on the module instances
# for the duration of the call. Statistics are kept on the Python side, so the
# layers must run in the trace of the call (a Python loop over time steps is
# fine; nnx.scan, as in nnx.RNN, is not).
# ---------------------------------------------------------------------------


def _nnx_apply(module, args, kwargs, unsupported):
  from flax import nnx  # pylint: disable=g-import-not-at-top

  records: dict = {}
  swaps = []
  for path, node in nnx.iter_graph(module):
    path = tuple(path)

    def record(total, count, path=path):
      key = path + ("kernel",)
      if key in records:
        t, c = records[key]
        records[key] = (t + total, c + count)
      else:
        records[key] = (total, count)

    if isinstance(node, (nnx.Linear, nnx.LinearGeneral)):
      if getattr(node, "dot_general_cls", None) is not None:
        continue
      op = _recording(
          lambda lhs, shape, dims, **kw: _dot_general_stat(lhs, shape, dims),
          getattr(node, "dot_general", None) or lax.dot_general,
          record,
      )
      swaps.append(_swapped(node, "dot_general", op))
    elif isinstance(node, nnx.Conv) and node.mask is None:
      if getattr(node, "conv_general_dilated_cls", None) is not None:
        continue
      op = _recording(
          _conv_stat, node.conv_general_dilated or lax.conv_general_dilated, record
      )
      swaps.append(_swapped(node, "conv_general_dilated", op))
    elif isinstance(node, nnx.Einsum):
      original = node.einsum_op

      def einsum_op(einsum_str, lhs, rhs, *a, original=original, record=record, **kw):
        try:
          total, count = _einsum_stat(einsum_str, lhs, jnp.shape(rhs))
        except _Unsupported:
          pass
        else:
          record(total, count)
        return original(einsum_str, lhs, rhs, *a, **kw)

      swaps.append(_swapped(node, "einsum_op", einsum_op))

  with contextlib.ExitStack() as stack:
    for swap in swaps:
      stack.enter_context(swap)
    out = module(*args, **kwargs)
  params = nnx.state(module, nnx.Param)
  try:
    # Using a statistic recorded inside an nnx transform raises here: it is a
    # tracer of a trace that has ended.
    stats = {k: (t + 0, jnp.asarray(c, jnp.float32)) for k, (t, c) in records.items()}
  except jax.errors.UnexpectedTracerError as e:
    raise ValueError(
        "signal norm for flax.nnx records the layers' inputs in the trace of"
        " the call, but some layers ran inside an nnx transform (nnx.scan, as"
        " in nnx.RNN, or nnx.vmap). Apply recurrent cells in a Python loop over"
        " time steps, or use the flax.linen version of the model (nn.RNN is"
        " supported there)."
    ) from e
  return out, _build_scales(params, stats, unsupported)


def _is_nnx_module(model) -> bool:
  try:
    from flax import nnx  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover
    return False
  return isinstance(model, nnx.Module)


def _is_linen_module(model) -> bool:
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  return isinstance(model, nn.Module)


def signal_norm_apply(model: Any, *args: Any, unsupported: str = "warn", **kwargs: Any):
  r"""Runs a flax model once and returns its outputs and the signal-norm lambdas.

  For a weight :math:`x_i` feeding neuron :math:`j` (Eq. 17 of Whitelam et
  al. 2022),

  .. math::
    \lambda_i = \Big(N_\text{data}^{-1} \sum_{\alpha}
    \sum_{i' \to j} S_{\alpha i'}^2\Big)^{-1/2},

  where :math:`S_{\alpha i'}` are the inputs of neuron :math:`j` in
  evaluation :math:`\alpha` and the mean is over every evaluation of the layer
  in this call: data points, and also output positions of a convolution and
  time steps of a recurrent cell. Biases get :math:`\lambda = 1` (Eq. 18), a
  neuron whose inputs are all zero :math:`\lambda = 0`.

  Rules exist for the kernels of ``Dense``/``Linear`` (fan-in = input
  features), ``DenseGeneral``/``LinearGeneral`` (contracted axes; one lambda
  per batch-axis slice), ``Conv`` (fan-in = receptive field x input channels
  of the feature group, with the layer's own strides, padding and dilations;
  averaged over data and positions), ``Einsum`` (``'in,kernel->out'``
  equations), and the recurrent cells made of them (``SimpleCell``,
  ``GRUCell``, ``LSTMCell``, ``MGUCell``, ``ConvLSTMCell``; in linen also
  under ``nn.RNN``). Every other parameter (e.g. of ``Embed``, a masked or
  quantized layer, normalisation scales) keeps :math:`\lambda = 1`, and is
  named in a :class:`SignalNormWarning` (``unsupported='warn'``), an error
  (``'error'``), or nothing (``'ignore'``).

  The lambdas come out of the same forward pass as the outputs: the inputs of
  each layer's ``dot_general``/``conv_general_dilated``/``einsum`` are
  squared and summed on the way.

  Args:
    model: a ``flax.linen.Module`` or a ``flax.nnx.Module``.
    *args: for linen, ``params, *inputs``, where ``params`` is either the
      variables dict given to ``model.apply`` (``{"params": ...}``, other
      collections allowed) or the ``"params"`` collection alone; for nnx, the
      inputs of ``model(*inputs)``.
    unsupported: what to do about parameters without a rule: ``"warn"``,
      ``"error"`` or ``"ignore"``.
    **kwargs: keyword arguments of ``model.apply`` / ``model(...)``.

  Returns:
    ``(outputs, scales)``. For linen, ``scales`` has the structure of
    ``params`` as given (other collections get ones); for nnx it is an
    ``nnx.State`` like ``nnx.state(model, nnx.Param)``. Leaves have the
    shapes and dtypes of the parameters.

  Examples:
    >>> import flax.linen as nn, jax, jax.numpy as jnp, amc_jax
    >>> model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(1)])
    >>> x = jnp.ones((5, 3))
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> out, scales = amc_jax.signal_norm_apply(model, params, x)
    >>> scales["layers_0"]["kernel"][0, 0]  # (mean_alpha sum_i 1^2)^(-1/2) = 3^(-1/2)
    Array(0.57735026, dtype=float32)
    >>> scales["layers_0"]["bias"][0]
    Array(1., dtype=float32)
  """
  _check_unsupported(unsupported)
  if _is_nnx_module(model):
    return _nnx_apply(model, args, kwargs, unsupported)
  if _is_linen_module(model):
    if not args:
      raise TypeError("signal_norm_apply(linen_model, params, *inputs): params missing.")
    return _linen_apply(model, args[0], args[1:], kwargs, unsupported)
  raise TypeError(
      "signal_norm_apply needs a flax.linen.Module or a flax.nnx.Module, got"
      f" {type(model).__name__}."
  )


def signal_norm_value_fn(
    model: Any,
    loss_fn: Callable[..., Any],
    *,
    unsupported: str = "warn",
    wrt: Any = None,
) -> Callable[..., tuple[Any, PyTree]]:
  """Turns a flax model and a loss of its outputs into a signal-norm value function.

  The result is ``value_fn(params, inputs, *targets) -> (loss, scales)`` with
  ``loss = loss_fn(model(inputs), *targets)`` and ``scales`` the signal-norm
  lambdas of ``params`` (see :func:`signal_norm_apply`) from the same forward
  pass: what ``amc_jax.amc(..., signal_norm=True)`` needs as ``value_fn``
  once the data is bound (``value_fn=lambda p: f(p, x, y)``), and what
  :func:`amc_jax.fit` takes as ``loss_fn`` (``lambda p, b: f(p, *b)``).

  For linen, ``params`` is what is passed to ``model.apply`` (the variables
  dict, or the ``"params"`` collection alone). For nnx, ``params`` is the
  ``nnx.State`` of the parameters that ``nnx.Optimizer(model, tx, wrt=wrt)``
  hands the transformation; the function merges it into the model's graph
  (the model itself is not modified).

  Args:
    model: a ``flax.linen.Module`` or a ``flax.nnx.Module``.
    loss_fn: ``loss_fn(outputs, *targets) -> scalar``.
    unsupported: see :func:`signal_norm_apply`.
    wrt: nnx only: the filter of the optimized parameters (default
      ``nnx.Param``).

  Returns:
    ``value_fn(params, inputs, *targets) -> (loss, scales)``.

  Examples:
    >>> import flax.linen as nn, jax, jax.numpy as jnp, optax, amc_jax
    >>> x = jnp.linspace(0.0, 1.0, 64)[:, None]
    >>> y = jnp.sin(2 * jnp.pi * x)
    >>> model = nn.Sequential([nn.Dense(16), nn.tanh, nn.Dense(1)])
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> mse = lambda out, y: jnp.mean((out - y) ** 2)
    >>> value_fn = amc_jax.signal_norm_value_fn(model, mse)
    >>> tx = amc_jax.amc(sigma0=1e-2, epsilon=1e-2, signal_norm=True)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(
    ...       None, state, params, value_fn=lambda p: value_fn(p, x, y))
    ...   return optax.apply_updates(params, updates), state
    >>> loss0 = value_fn(params, x, y)[0]
    >>> for _ in range(200):
    ...   params, state = step(params, state)
    >>> bool(state.loss < loss0)
    True
  """
  _check_unsupported(unsupported)
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
  if _is_nnx_module(model):
    from flax import nnx  # pylint: disable=g-import-not-at-top

    graphdef, _, rest = nnx.split(model, nnx.Param if wrt is None else wrt, ...)

    def nnx_value_fn(params, inputs, *targets):
      merged = nnx.merge(graphdef, params, rest, copy=True)
      out, scales = _nnx_apply(merged, (inputs,), {}, unsupported)
      return loss_fn(out, *targets), _restrict(scales, params)

    return nnx_value_fn
  if _is_linen_module(model):
    if wrt is not None:
      raise TypeError("wrt is for flax.nnx models only.")

    def linen_value_fn(params, inputs, *targets):
      out, scales = _linen_apply(model, params, (inputs,), {}, unsupported)
      return loss_fn(out, *targets), scales

    return linen_value_fn
  raise TypeError(
      "signal_norm_value_fn needs a flax.linen.Module or a flax.nnx.Module, got"
      f" {type(model).__name__}."
  )


def _restrict(scales, params):
  """The entries of an nnx.State of lambdas for the leaves of ``params``."""
  flat = {_names(p): s for p, s in jax.tree_util.tree_leaves_with_path(scales)}
  return jax.tree_util.tree_map_with_path(
      lambda p, x: flat.get(_names(p), jnp.ones_like(x)), params
  )
