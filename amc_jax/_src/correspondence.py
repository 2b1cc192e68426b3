"""The Monte Carlo / gradient-descent correspondence, made measurable.

Whitelam, Selin, Park and Tamblyn (2021), "Correspondence between
neuroevolution and gradient descent": for small moves, a Metropolis chain is
noisy gradient descent. At temperature :math:`T = 1/\\beta > 0`,

.. math::
  \\dot x_i = -\\frac{\\beta \\sigma^2}{2} \\frac{\\partial U}{\\partial x_i}
  + \\xi_i \\quad \\text{(Eq. 3)},

and at :math:`T = 0` normalized gradient descent,

.. math::
  \\dot x_i = -\\frac{\\sigma}{\\sqrt{2\\pi}}
  \\frac{\\partial_i U}{|\\nabla U|} + \\eta_i \\quad \\text{(Eq. 6)},

with time counted in Monte Carlo steps; the mean over independent chains
follows the noise-free equations (Eqs. 5 and 8). This module holds the
gradient side (:func:`normalized_sgd`, :func:`equivalent_gradient_descent`)
and the experiment that compares the two (:func:`correspondence`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amc_jax._src import amc as amc_lib
from amc_jax._src import base
from amc_jax._src import ensemble
from amc_jax._src import fit as fit_lib

PyTree = Any

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def normalize_by_global_norm() -> optax.GradientTransformation:
  """Divides the updates by their global norm :math:`|g|`; zero stays zero.

  The direction of steepest descent with unit length, the building block of
  :func:`normalized_sgd`. The norm runs over every leaf of the pytree (the
  whole parameter vector, as in Eq. 49), accumulated in at least float32; an
  all-zero gradient gives all-zero updates rather than NaN.

  Returns:
    A stateless ``optax.GradientTransformation``.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.normalize_by_global_norm()
    >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}   # global norm 5
    >>> updates, _ = tx.update(grads, tx.init(grads))
    >>> round(float(updates["a"][0]), 6), round(float(updates["b"][0]), 6)
    (0.6, 0.8)
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    norm = base.global_norm(updates)
    inv = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)
    updates = jax.tree_util.tree_map(lambda g: (g * inv.astype(g.dtype)), updates)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def normalized_sgd(learning_rate: base.ScalarOrSchedule) -> optax.GradientTransformation:
  r"""Normalized gradient descent, Eq. (49) of Whitelam et al. (2021).

  .. math::
    x_i \to x_i - \alpha \, \frac{\partial_i U(x)}{|\nabla U(x)|}, \qquad
    |\nabla U| = \sqrt{\textstyle\sum_j (\partial_j U)^2},

  the norm running over the whole params pytree. Every step moves the params
  a distance :math:`\alpha` (or not at all where the gradient vanishes). It is
  the noise-free counterpart of zero-temperature Metropolis Monte Carlo with
  step size :math:`\sigma = \alpha \sqrt{2\pi}` (Eq. 6): averaged over chains,
  one Metropolis step moves the params as one step of this optimizer. See
  :func:`equivalent_gradient_descent` and :func:`correspondence`.

  Args:
    learning_rate: :math:`\alpha`, the length of each step: a float or an
      optax schedule.

  Returns:
    An ``optax.GradientTransformation``: ``optax.chain`` of
    :func:`normalize_by_global_norm` and ``optax.scale_by_learning_rate``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> params = {"w": jnp.array([3.0, 4.0])}
    >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)   # gradient (3, 4), norm 5
    >>> tx = amc_jax.normalized_sgd(0.5)
    >>> updates, _ = tx.update(jax.grad(loss)(params), tx.init(params))
    >>> updates["w"]
    Array([-0.3, -0.4], dtype=float32)
  """
  if not callable(learning_rate):
    base.check_positive("learning_rate", learning_rate)
  return optax.chain(
      normalize_by_global_norm(),
      optax.scale_by_learning_rate(learning_rate),
  )


def _check_static_temperature(temperature: Any) -> float:
  if callable(temperature):
    raise TypeError(
        "the correspondence needs a fixed temperature T >= 0 (a number); got a"
        " schedule."
    )
  base.check_temperature(temperature)
  if not base.is_concrete(temperature):
    raise TypeError("temperature must be a concrete number here, not a traced value.")
  return float(np.asarray(temperature))


def drift_per_step(sigma: base.Scalar, temperature: base.Scalar = 0.0) -> float:
  r"""Time that one Metropolis step represents on the gradient-descent axis.

  The mean displacement of a small Metropolis step is a gradient-descent step
  of length :math:`\sigma/\sqrt{2\pi}` along :math:`-\nabla U/|\nabla U|` at
  :math:`T = 0` (Eq. 6), or :math:`\sigma^2/(2T)` times :math:`-\nabla U` at
  :math:`T > 0` (Eq. 3). This is that factor: the learning rate of
  :func:`equivalent_gradient_descent`, and the time :math:`t = \alpha t_{gd}`
  that one Monte Carlo step advances in :func:`correspondence`.

  Examples:
    >>> import math, amc_jax
    >>> math.isclose(amc_jax.drift_per_step(0.1), 0.1 / math.sqrt(2 * math.pi))  # T = 0
    True
    >>> round(amc_jax.drift_per_step(0.1, temperature=0.5), 12)  # T > 0: sigma**2 / (2 T)
    0.01
  """
  base.check_positive("sigma", sigma)
  t = _check_static_temperature(temperature)
  sigma = float(np.asarray(sigma))
  return sigma / _SQRT_2PI if t == 0.0 else sigma**2 / (2.0 * t)


def equivalent_gradient_descent(
    sigma: base.Scalar, temperature: base.Scalar = 0.0
) -> optax.GradientTransformation:
  r"""The gradient descent that Metropolis Monte Carlo at (sigma, T) averages to.

  For small moves, the mean over independent chains of Metropolis with step
  size :math:`\sigma` (:func:`~amc_jax.metropolis`) follows, per Monte Carlo
  step,

  - at :math:`T > 0`: plain gradient descent with learning rate
    :math:`\alpha = \beta\sigma^2/2 = \sigma^2/(2T)` (Eq. 5), returned as
    ``optax.sgd(sigma**2 / (2 * T))``;
  - at :math:`T = 0`: normalized gradient descent with
    :math:`\alpha = \sigma/\sqrt{2\pi}` (Eq. 8), returned as
    :func:`normalized_sgd` ``(sigma / sqrt(2 pi))``.

  One step of the returned optimizer corresponds to one Metropolis step.

  Args:
    sigma: the Metropolis step size, > 0.
    temperature: T >= 0, a number (not a schedule).

  Returns:
    An ``optax.GradientTransformation``.

  Examples:
    >>> import amc_jax
    >>> tx = amc_jax.equivalent_gradient_descent(sigma=0.1, temperature=0.5)
    >>> # the same as optax.sgd(0.1**2 / (2 * 0.5)) = optax.sgd(0.01)
  """
  rate = drift_per_step(sigma, temperature)
  if _check_static_temperature(temperature) == 0.0:
    return normalized_sgd(rate)
  return optax.sgd(rate)


class CorrespondenceResult(NamedTuple):
  r"""What :func:`correspondence` returns; every array has a leading axis of
  ``n_records + 1`` records (the first is the common initial point, t = 0).

  Attributes:
    time: the common time :math:`t = \alpha t_{gd} = \tau t_{mc}` of each
      record, with :math:`\tau` = :func:`drift_per_step` (Section IV of the
      paper: :math:`t = \alpha\lambda t_{neuro}` at T = 0).
    mc_steps: Monte Carlo steps taken by every chain.
    gd_steps: gradient-descent steps taken.
    mc_mean: the ensemble mean :math:`\langle x_i \rangle` over chains, a
      pytree like the params.
    mc_chains: the first ``n_kept`` chains, a pytree like the params with a
      chain axis after the record axis.
    gd: the gradient-descent params :math:`x_i^{gd}(t)`.
    delta: :math:`\Delta(t) = N^{-1}\sum_i (x^{gd}_i - \langle x_i\rangle)^2`
      (Eq. 52), over all N params.
    delta_floor: :math:`N^{-1}\sum_i \mathrm{Var}(x_i)/M`, what ``delta``
      would be on average from the finite ensemble of M chains alone if the
      true mean and gradient descent agreed exactly; ``delta`` much above it
      is a real difference.
    mc_loss_mean: the mean over chains of :math:`U(x)`.
    mc_loss_std: the standard deviation over chains of :math:`U(x)`.
    mc_loss_chains: :math:`U` of the ``n_kept`` chains.
    gd_loss: :math:`U(x^{gd})`.
    acceptance: fraction of the moves since the previous record that were
      accepted, over all chains (NaN at t = 0).
    gd_steps_per_mc_step: :math:`\lambda = \tau/\alpha`.
    learning_rate: :math:`\alpha` of the gradient descent.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> r = amc_jax.correspondence(lambda x: jnp.sum(x**2), jnp.ones(3), sigma=0.01,
    ...                            n_chains=16, mc_steps=20, n_records=4, n_kept=2)
    >>> r.time.shape, r.delta.shape, r.mc_mean.shape, r.mc_chains.shape
    ((5,), (5,), (5, 3), (5, 2, 3))
  """

  time: np.ndarray
  mc_steps: np.ndarray
  gd_steps: np.ndarray
  mc_mean: PyTree
  mc_chains: PyTree
  gd: PyTree
  delta: np.ndarray
  delta_floor: np.ndarray
  mc_loss_mean: np.ndarray
  mc_loss_std: np.ndarray
  mc_loss_chains: np.ndarray
  gd_loss: np.ndarray
  acceptance: np.ndarray
  gd_steps_per_mc_step: float
  learning_rate: float


def _flat(tree: PyTree, lead: int) -> jax.Array:
  """Concatenates the leaves, keeping ``lead`` leading axes, in float32 or wider."""
  leaves = jax.tree_util.tree_leaves(tree)
  acc = base.accumulator_dtype(leaves)
  return jnp.concatenate(
      [x.reshape(x.shape[:lead] + (-1,)).astype(acc) for x in leaves], axis=-1
  )


def _unflat(vector: jax.Array, like: PyTree) -> PyTree:
  """The inverse of ``_flat(like, 0)``: a pytree like ``like`` (its shapes and dtypes)."""
  leaves, treedef = jax.tree_util.tree_flatten(like)
  ends = np.cumsum([int(np.prod(jnp.shape(x))) for x in leaves])
  parts = jnp.split(vector, ends[:-1])
  return jax.tree_util.tree_unflatten(
      treedef, [p.reshape(jnp.shape(x)).astype(x.dtype) for p, x in zip(parts, leaves)]
  )


def correspondence(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *,
    sigma: base.Scalar,
    temperature: base.Scalar = 0.0,
    n_chains: int = 1000,
    mc_steps: int,
    learning_rate: Optional[base.Scalar] = None,
    n_records: int = 100,
    n_kept: int = 25,
    data: Optional[PyTree] = None,
    seed: base.PRNGKeyLike = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> CorrespondenceResult:
  r"""Runs an ensemble of Metropolis chains beside the matching gradient descent.

  Section IV of Whitelam et al. (2021): ``n_chains`` chains of
  :func:`~amc_jax.metropolis` ``(sigma, temperature)`` start from the same
  ``params`` with independent keys, and gradient descent with learning rate
  :math:`\alpha` starts there too: normalized gradient descent (Eq. 49,
  :func:`normalized_sgd`) at :math:`T = 0`, plain ``optax.sgd`` at
  :math:`T > 0` (Eq. 5). Both are put on the common time axis
  :math:`t = \alpha\, t_{gd} = \tau\, t_{mc}`, where :math:`\tau` is
  :func:`drift_per_step`: :math:`\sigma/\sqrt{2\pi}` at T = 0, so that with
  :math:`\sigma = \lambda\alpha\sqrt{2\pi}` (Eq. 51) one Monte Carlo step is
  :math:`\lambda` gradient steps, and :math:`\sigma^2/(2T)` at T > 0.
  Every ``mc_steps / n_records`` Monte Carlo steps (which must be a whole
  number of gradient steps) it records the ensemble mean, a few chains, the
  gradient-descent params, the losses and

  .. math::
    \Delta(t) = \frac{1}{N}\sum_{i=1}^N
    \left(x_i^{gd}(t) - \langle x_i^{mc}(t)\rangle\right)^2
    \quad \text{(Eq. 52)}.

  The chains run as ``jax.vmap`` of the Metropolis step in batch mode (one
  loss evaluation per chain and step), ``mc_steps / n_records`` steps per
  jitted ``lax.scan``; the gradient steps run in the same compiled call.

  Args:
    loss_fn: ``loss_fn(params) -> scalar``, or ``loss_fn(params, data)`` with
      ``data``; differentiable (gradient descent needs ``jax.grad``).
    params: the common initial params.
    sigma: the Metropolis step size (> 0).
    temperature: T >= 0 (a number).
    n_chains: number of independent chains M.
    mc_steps: Monte Carlo steps per chain, a multiple of ``n_records``.
    learning_rate: :math:`\alpha` of the gradient descent; default
      :math:`\tau` (one gradient step per Monte Carlo step).
    n_records: number of records after t = 0.
    n_kept: how many single chains to keep whole (the first ones).
    data: optional pytree of arrays passed to ``loss_fn`` as an argument of
      the compiled function (better than closing over large constants).
    seed: int or key: chain ``k`` gets key ``k`` of ``jax.random.split``.
    progress: optional callable given a line of text (t and Delta) after
      every record, as the run goes.

  Returns:
    A :class:`CorrespondenceResult` of NumPy arrays.

  Examples:
    >>> import math, jax.numpy as jnp, amc_jax
    >>> loss = lambda x: jnp.sum((x - 1.0) ** 2)
    >>> sigma = 0.01 * math.sqrt(2 * math.pi)   # lambda = 1, alpha = 0.01 (Eq. 51)
    >>> r = amc_jax.correspondence(loss, jnp.zeros(4), sigma=sigma,
    ...                            n_chains=200, mc_steps=400, n_records=4)
    >>> r.time          # tau = sigma / sqrt(2 pi) = 0.01 per Monte Carlo step
    array([0., 1., 2., 3., 4.])
    >>> bool(r.delta[-1] < 0.01 * float(r.gd_loss[0]))
    True
  """
  tau = drift_per_step(sigma, temperature)
  t = _check_static_temperature(temperature)
  n_chains, mc_steps, n_records, n_kept = _check_counts(n_chains, mc_steps, n_records, n_kept)
  per_record = mc_steps // n_records
  alpha, ratio, gd_per_record = _gradient_schedule(tau, learning_rate, per_record)
  if not jax.tree_util.tree_leaves(params):
    raise ValueError("params must contain at least one array; got an empty pytree.")
  value = (lambda p, d: loss_fn(p, d)) if data is not None else (lambda p, d: loss_fn(p))
  gd_tx = normalized_sgd(alpha) if t == 0.0 else optax.sgd(alpha)
  x0 = _flat(params, 0)
  gd = _gd_records(gd_tx, params, value, data, gd_per_record, n_records)
  gd_dev = [np.asarray(_flat(p, 0) - x0, np.float64) for p in gd["params"]]

  def on_record(r, row):
    if progress is not None:
      delta = np.mean(np.square(gd_dev[r] - row["mean_dev"]))
      progress(f"record {r}/{n_records}: t = {r * per_record * tau:.4g}, Delta = {delta:.3g}")

  mc = _mc_records(amc_lib.metropolis(sigma, t, seed=0), params, x0, value, data, seed,
                   n_chains=n_chains, per_record=per_record, n_records=n_records,
                   n_kept=n_kept, on_record=on_record)
  return _result(mc, gd, gd_dev, params, x0, tau=tau, per_record=per_record,
                 gd_per_record=gd_per_record, ratio=ratio, alpha=alpha, n_chains=n_chains,
                 n_kept=n_kept)


def _check_counts(n_chains, mc_steps, n_records, n_kept):
  base.check_count("n_chains", n_chains)
  base.check_count("mc_steps", mc_steps)
  base.check_count("n_records", n_records)
  if isinstance(n_kept, bool) or not isinstance(n_kept, int) or n_kept < 0:
    raise ValueError(f"n_kept must be an integer >= 0, got {n_kept!r}.")
  n_chains, mc_steps, n_records = int(n_chains), int(mc_steps), int(n_records)
  if mc_steps % n_records:
    raise ValueError(
        f"mc_steps ({mc_steps}) must be a multiple of n_records ({n_records})."
    )
  return n_chains, mc_steps, n_records, min(n_kept, n_chains)


def _gradient_schedule(tau, learning_rate, per_record):
  """(alpha, gradient steps per Monte Carlo step, gradient steps per record)."""
  if learning_rate is None:
    alpha = tau
  else:
    base.check_positive("learning_rate", learning_rate)
    alpha = float(np.asarray(learning_rate))
  ratio = tau / alpha
  gd_per_record_f = ratio * per_record
  gd_per_record = int(round(gd_per_record_f))
  if gd_per_record < 1 or abs(gd_per_record - gd_per_record_f) > 1e-6 * max(1.0, gd_per_record_f):
    raise ValueError(
        f"one record is {per_record} Monte Carlo steps = {gd_per_record_f:g} gradient"
        f" steps (tau / learning_rate = {ratio:g} gradient steps per Monte Carlo"
        " step); choose mc_steps / n_records so that this is a whole number >= 1."
    )
  return alpha, ratio, gd_per_record


def _fit(tx, params, value, data, *, steps, per_record, eval_fn, **kwargs):
  """``amc_jax.fit`` in full batch, one chunk and one evaluation per record."""
  loss = (lambda p, d: value(p, d)) if data is not None else (lambda p: value(p, None))
  return fit_lib.fit(tx, params, loss, data, steps=steps, chunk=per_record,
                     log_every=per_record, eval_fn=eval_fn, eval_every=per_record,
                     progress=False, **kwargs)


def _gd_records(gd_tx, params, value, data, gd_per_record, n_records):
  """Gradient descent through :func:`amc_jax.fit`: its params and loss at
  every record (the first at t = 0)."""
  loss_at = jax.jit(value)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  records = [(jax.tree_util.tree_map(jnp.copy, params), loss_at(params, data))]
  record = lambda p: (jax.tree_util.tree_map(jnp.copy, p), loss_at(p, data))
  result = _fit(gd_tx, params, value, data, steps=gd_per_record * n_records,
                per_record=gd_per_record, eval_fn=record)
  records += [(jax.tree_util.tree_map(lambda x, i=i: x[i], result.history["eval"][0]),
               result.history["eval"][1][i]) for i in range(n_records)]
  return {"params": [jax.device_get(p) for p, _ in records],
          "loss": np.asarray([loss for _, loss in records])}


def _mc_records(tx, params, x0, value, data, seed, *, n_chains, per_record, n_records, n_kept,
                on_record):
  """The ensemble of chains through :func:`amc_jax.fit`: at every record the
  mean deviation from the common start, the variance summed over params, the
  kept chains, each chain's loss and the acceptance. ``x0``: ``params`` flat."""

  @jax.jit
  def summary(ens_params):
    # Deviations from the common start: Delta is exactly 0 at t = 0 and keeps
    # its precision when the ensemble mean is close to gradient descent.
    dev = _flat(ens_params, 1) - x0[None]  # [M, N]
    return {"mean_dev": jnp.mean(dev, axis=0), "var": jnp.mean(jnp.var(dev, axis=0)),
            "chains": jax.tree_util.tree_map(lambda x: x[:n_kept], ens_params)}

  ens_params = jax.tree_util.tree_map(
      lambda x: jnp.broadcast_to(jnp.asarray(x), (n_chains,) + jnp.shape(x)), params)
  first = jax.device_get(summary(ens_params))
  first_loss = np.full(n_chains, np.asarray(jax.jit(value)(params, data)))
  on_record(0, first)
  rows = []

  def record(ens_params):  # fit's eval_fn, between chunks: the run's progress
    rows.append(jax.device_get(summary(ens_params)))
    on_record(len(rows), rows[-1])

  result = _fit(tx, ens_params, value, data, steps=per_record * n_records,
                per_record=per_record, eval_fn=record, n_chains=n_chains,
                opt_state=ensemble.init_ensemble(tx, ens_params, seed), donate=True)
  acceptance = np.concatenate([[np.nan], np.mean(result.history["acceptance"], axis=1)])
  losses = np.concatenate([first_loss[None], result.history["loss"]])
  return {"rows": [first] + rows, "loss": losses, "acceptance": acceptance}


def _result(mc, gd, gd_dev, params, x0, *, tau, per_record, gd_per_record, ratio, alpha, n_chains,
            n_kept):
  """The :class:`CorrespondenceResult` of the records."""
  n = len(mc["rows"])
  mean_dev = np.stack([np.asarray(row["mean_dev"], np.float64) for row in mc["rows"]])
  x0 = np.asarray(x0, np.float64)
  dtype = np.asarray(mc["rows"][0]["mean_dev"]).dtype
  stack = lambda trees: jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)
  losses = np.asarray(mc["loss"], np.float64)
  steps = np.arange(n) * per_record
  return CorrespondenceResult(
      time=steps * tau,
      mc_steps=steps,
      gd_steps=np.arange(n) * gd_per_record,
      mc_mean=stack([jax.device_get(_unflat(jnp.asarray((x0 + d).astype(dtype)), params))
                     for d in mean_dev]),
      mc_chains=stack([row["chains"] for row in mc["rows"]]),
      gd=stack(gd["params"]),
      delta=np.mean(np.square(np.stack(gd_dev) - mean_dev), axis=1).astype(dtype),
      delta_floor=np.asarray([row["var"] for row in mc["rows"]]) / n_chains,
      mc_loss_mean=np.mean(losses, axis=1).astype(dtype),
      mc_loss_std=np.std(losses, axis=1).astype(dtype),
      mc_loss_chains=mc["loss"][:, :n_kept],
      gd_loss=gd["loss"],
      acceptance=mc["acceptance"],
      gd_steps_per_mc_step=ratio,
      learning_rate=alpha,
  )
