"""Loss-surface probes: diagnostics evaluated beside training, never by it.

Monte Carlo as a probe of loss surfaces (Casert and Whitelam 2024): how
steep the surface is along a trajectory (Fig. 5c of Whitelam et al. 2022),
how the acceptance rate of a chain falls with the loss (their Fig. 2), and
the loss along the straight line between two parameter sets (the
linear-interpolation probe of Goodfellow, Vinyals and Saxe 2015).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from amc_jax._src import base
from amc_jax._src import trees

PyTree = Any


def gradient_norm(loss_fn: Callable[..., jax.Array], params: PyTree, *args: Any) -> jax.Array:
  r"""The norm of the gradient of the loss, :math:`|\nabla U(x)|`.

  .. math::
    |\nabla U(x)| = \sqrt{\textstyle\sum_i (\partial U / \partial x_i)^2},

  over every leaf of ``params``, accumulated in at least float32. A
  diagnostic (Fig. 5c of Whitelam et al. 2022): Monte Carlo never needs it,
  and where it is huge or infinite (exploding gradients) gradient descent
  cannot proceed while Monte Carlo can. Non-finite gradients give ``inf`` or
  ``nan`` rather than an error, since that is what is being diagnosed.

  Args:
    loss_fn: ``loss_fn(params, *args) -> scalar``, differentiable.
    params: where to evaluate it.
    *args: further arguments of ``loss_fn`` (data), not differentiated.

  Returns:
    A scalar array.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2) + 2.0 * p["b"]
    >>> amc_jax.gradient_norm(loss, {"w": jnp.array([3.0, 0.0]), "b": jnp.array(1.0)})
    Array(3.6055512, dtype=float32)
  """
  return base.global_norm(jax.grad(loss_fn)(params, *args))


def gradient_norm_along(
    loss_fn: Callable[..., jax.Array],
    trajectory: PyTree,
    *args: Any,
    batch_size: Optional[int] = None,
) -> jax.Array:
  r""":math:`|\nabla U|` at every point of a trajectory (a leading time axis).

  ``trajectory`` is a pytree like the params whose leaves carry a leading axis
  of T points (for example params saved during a run, or a
  :class:`~amc_jax.CorrespondenceResult`'s ``mc_mean``). The points are
  evaluated with ``jax.lax.map`` (``batch_size`` points at a time with
  ``jax.vmap`` inside, default one), so memory stays that of one gradient.

  Args:
    loss_fn: ``loss_fn(params, *args) -> scalar``.
    trajectory: params with a leading axis of T points.
    *args: further arguments of ``loss_fn``, shared by all points.
    batch_size: points per vmapped batch.

  Returns:
    An array ``[T]`` of gradient norms.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> loss = lambda x: jnp.sum(x ** 2)
    >>> amc_jax.gradient_norm_along(loss, jnp.array([[3.0, 4.0], [0.0, 0.5]]))
    Array([10.,  1.], dtype=float32)
  """
  trees.leading_size(trajectory, "the trajectory", "(of time)")
  fn = jax.jit(lambda traj, *a: jax.lax.map(
      lambda p: gradient_norm(loss_fn, p, *a), traj, batch_size=batch_size))
  return fn(trajectory, *args)


class AcceptanceByLoss(NamedTuple):
  """What :func:`acceptance_by_loss` returns, one entry per loss bin.

  Attributes:
    edges: ``[B + 1]`` bin edges in loss.
    centres: ``[B]`` bin centres (geometric for logarithmic bins).
    rate: ``[B]`` fraction of the moves from a loss in the bin that were
      accepted (NaN for an empty bin).
    count: ``[B]`` number of moves (the weights' sum) in the bin.
    stderr: ``[B]`` binomial standard error ``sqrt(rate (1 - rate) / count)``,
      which treats the moves as independent: an underestimate where
      consecutive acceptances are correlated.

  Examples:
    >>> import numpy as np, amc_jax
    >>> loss = np.array([1.0, 1.0, 0.1, 0.1])
    >>> accepted = np.array([True, True, True, False])
    >>> profile = amc_jax.acceptance_by_loss(loss, accepted, bins=[0.05, 0.5, 5.0])
    >>> profile.rate.tolist(), profile.count.tolist()
    ([0.5, 1.0], [2.0, 2.0])
  """

  edges: np.ndarray
  centres: np.ndarray
  rate: np.ndarray
  count: np.ndarray
  stderr: np.ndarray


def acceptance_by_loss(
    loss: Any,
    accepted: Any,
    *,
    bins: Union[int, Sequence[float]] = 20,
    log: bool = True,
    weights: Optional[Any] = None,
) -> AcceptanceByLoss:
  r"""The acceptance rate of a Monte Carlo run as a function of the loss.

  Fig. 2 of Whitelam et al. (2022): at large loss there are more downhill
  directions than at small loss, so the acceptance rate falls as training
  proceeds, and faster for plain Metropolis than for aMC. Give it the loss
  U(x) *before* each move and whether the move was accepted, for one chain or
  many (any shapes, flattened together): per step, e.g. ``state.loss`` before
  the update and ``state.info.accepted`` after, or per row of a
  :func:`~amc_jax.fit` history (``history["loss"]``, ``history["acceptance"]``
  with ``weights`` = steps per row; the row's loss is then the loss at the end
  of the row, a fine approximation when rows are short). Non-finite losses
  (before the first step) are dropped.

  Args:
    loss: losses before the moves.
    accepted: booleans, or acceptance fractions in [0, 1], of the same shape.
    bins: number of bins spanning the finite losses, or explicit edges.
    log: logarithmic bins (losses must then be > 0) or linear ones.
    weights: optional number of moves each entry stands for (default 1).

  Returns:
    An :class:`AcceptanceByLoss`.

  Examples:
    >>> import numpy as np, amc_jax
    >>> loss = np.array([1.0, 1.0, 0.1, 0.1, 0.1, 0.1])
    >>> accepted = np.array([True, False, True, False, False, False])
    >>> profile = amc_jax.acceptance_by_loss(loss, accepted, bins=[0.05, 0.5, 5.0])
    >>> profile.rate
    array([0.25, 0.5 ])
  """
  loss = np.asarray(loss, dtype=np.float64).ravel()
  acc = np.asarray(accepted, dtype=np.float64).ravel()
  if loss.shape != acc.shape:
    raise ValueError(
        f"loss and accepted must have the same number of entries; got {loss.size}"
        f" and {acc.size}."
    )
  w = np.ones_like(loss) if weights is None else np.broadcast_to(
      np.asarray(weights, np.float64), np.shape(np.asarray(accepted))).ravel()
  if np.any((acc < 0) | (acc > 1)) or np.any(np.isnan(acc)):
    raise ValueError("accepted must be booleans or fractions in [0, 1].")
  if np.any(w < 0) or not np.all(np.isfinite(w)):
    raise ValueError("weights must be finite and >= 0.")
  keep = np.isfinite(loss) & (w > 0)
  loss, acc, w = loss[keep], acc[keep], w[keep]
  if log and np.any(loss <= 0):
    raise ValueError("log=True needs losses > 0; pass log=False for losses that reach 0 or below.")
  if np.ndim(bins) == 0:
    n_bins = int(bins)
    if n_bins < 1:
      raise ValueError(f"bins must be >= 1, got {bins!r}.")
    if loss.size == 0:
      raise ValueError("no finite losses to bin.")
    lo, hi = loss.min(), loss.max()
    if log:
      edges = np.geomspace(lo, hi, n_bins + 1) if hi > lo else np.array([lo / 1.01, hi * 1.01])
    else:
      edges = np.linspace(lo, hi, n_bins + 1) if hi > lo else np.array([lo - 0.5, hi + 0.5])
  else:
    edges = np.asarray(bins, np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
      raise ValueError("bins must be an int or an increasing sequence of at least 2 edges.")
    if log and edges[0] <= 0:
      raise ValueError("log=True needs bin edges > 0.")
  index = np.clip(np.searchsorted(edges, loss, side="right") - 1, 0, len(edges) - 2)
  inside = (loss >= edges[0]) & (loss <= edges[-1])
  count = np.bincount(index[inside], weights=w[inside], minlength=len(edges) - 1)
  hits = np.bincount(index[inside], weights=(w * acc)[inside], minlength=len(edges) - 1)
  with np.errstate(invalid="ignore", divide="ignore"):
    rate = np.where(count > 0, hits / np.where(count > 0, count, 1.0), np.nan)
    stderr = np.where(count > 0, np.sqrt(rate * (1 - rate) / np.where(count > 0, count, 1.0)), np.nan)
  centres = np.sqrt(edges[:-1] * edges[1:]) if log else 0.5 * (edges[:-1] + edges[1:])
  return AcceptanceByLoss(edges, centres, rate, count, stderr)


class LineProbe(NamedTuple):
  """What :func:`loss_along_line` returns.

  Attributes:
    alpha: ``[num]`` positions on the line; 0 is ``start`` and 1 is ``end``.
    loss: ``[num]`` the loss at ``(1 - alpha) start + alpha end``.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> probe = amc_jax.loss_along_line(lambda x: jnp.sum(x**2), jnp.array([-1.0]),
    ...                                 jnp.array([1.0]), num=3)
    >>> probe.alpha.tolist(), probe.loss.tolist()
    ([0.0, 0.5, 1.0], [1.0, 0.0, 1.0])
  """

  alpha: np.ndarray
  loss: np.ndarray


def loss_along_line(
    loss_fn: Callable[..., jax.Array],
    start: PyTree,
    end: PyTree,
    *args: Any,
    num: int = 51,
    margin: float = 0.0,
    batch_size: Optional[int] = None,
) -> LineProbe:
  r"""The loss on the straight line between two parameter sets.

  .. math::
    U\big((1 - \alpha)\, x_{start} + \alpha\, x_{end}\big), \qquad
    \alpha \in [-m, 1 + m],

  the linear-interpolation probe of Goodfellow, Vinyals and Saxe (2015): a
  barrier between initial and trained params (or between two trained
  chains) shows as a bump; a monotone fall says the two lie in one basin.
  Points are evaluated with ``jax.lax.map`` (``batch_size`` at a time).

  Args:
    loss_fn: ``loss_fn(params, *args) -> scalar``.
    start: params at alpha = 0.
    end: params at alpha = 1, with the structure, shapes and dtypes of
      ``start``.
    *args: further arguments of ``loss_fn`` (data).
    num: number of points (>= 2).
    margin: how far to extend the line beyond both ends (>= 0).
    batch_size: points per vmapped batch inside ``jax.lax.map``.

  Returns:
    A :class:`LineProbe` of NumPy arrays.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> loss = lambda x: jnp.sum((x ** 2 - 1.0) ** 2)     # minima at x = -1 and 1
    >>> probe = amc_jax.loss_along_line(loss, jnp.array([-1.0]), jnp.array([1.0]), num=5)
    >>> probe.alpha, probe.loss
    (array([0.  , 0.25, 0.5 , 0.75, 1.  ]), array([0.    , 0.5625, 1.    , 0.5625, 0.    ], dtype=float32))
  """
  if jax.tree_util.tree_structure(start) != jax.tree_util.tree_structure(end):
    raise ValueError(
        "start and end must have the same pytree structure; got"
        f" {jax.tree_util.tree_structure(start)} and {jax.tree_util.tree_structure(end)}."
    )
  for a, b in zip(jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(end)):
    if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
      raise ValueError(
          "start and end must have equal shapes and dtypes leaf by leaf; got"
          f" {jnp.shape(a)} {jnp.result_type(a)} and {jnp.shape(b)} {jnp.result_type(b)}."
      )
  if isinstance(num, bool) or int(num) != num or num < 2:
    raise ValueError(f"num must be an integer >= 2, got {num!r}.")
  if not (np.isfinite(margin) and margin >= 0):
    raise ValueError(f"margin must be finite and >= 0, got {margin!r}.")
  alpha = np.linspace(-margin, 1.0 + margin, int(num))

  def point(a, s, e, *rest):
    p = jax.tree_util.tree_map(
        lambda x, y: (1 - a.astype(x.dtype)) * x + a.astype(x.dtype) * y, s, e)
    return loss_fn(p, *rest)

  fn = jax.jit(lambda al, s, e, *rest: jax.lax.map(
      lambda a: point(a, s, e, *rest), al, batch_size=batch_size))
  losses = fn(jnp.asarray(alpha), start, end, *args)
  return LineProbe(alpha, np.asarray(losses))
