"""The loss a Monte Carlo step compares: checks, and the guards against NaN.

A loss must be a real scalar (:func:`as_loss`); a signal-norm loss a pair
``(loss, scales)`` with scales like the params (:func:`as_loss_and_scales`,
:func:`check_scales`). The current params' loss must be finite or +inf: a NaN
or -inf raises ``FloatingPointError``, eagerly or, under ``jit``, from a host
callback that runs only when the loss is bad (:func:`check_current_loss`),
naming the step. Imports only :mod:`base` and :mod:`trees`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from amc_jax._src import base
from amc_jax._src import trees

PyTree = Any


def check_scales(scales: PyTree, params: PyTree) -> None:
  """Raises unless ``scales`` is a pytree like ``params`` of broadcastable leaves."""
  s_def = jax.tree_util.tree_structure(scales)
  p_def = jax.tree_util.tree_structure(params)
  if s_def != p_def:
    raise ValueError(
        "scales must have the same pytree structure as params;"
        f" got {s_def} for scales and {p_def} for params."
    )
  for (path, s), p in zip(
      jax.tree_util.tree_leaves_with_path(scales), jax.tree_util.tree_leaves(params)
  ):
    s_shape, p_shape = jnp.shape(s), jnp.shape(p)
    try:
      out = jnp.broadcast_shapes(s_shape, p_shape)
    except ValueError:
      out = None
    if out != tuple(p_shape):
      raise ValueError(
          f"scales leaf {trees.leaf_name(path)} has shape {s_shape}, which does not"
          f" broadcast to the params leaf shape {p_shape}."
      )
    if not jnp.issubdtype(jnp.result_type(s), jnp.number):
      raise TypeError(
          f"scales leaf {trees.leaf_name(path)} must be numeric, got dtype"
          f" {jnp.result_type(s)}."
      )


def as_loss(value: Any, what: str) -> jax.Array:
  """Checks that a loss is a real scalar and casts it to the loss dtype."""
  arr = jnp.asarray(value)
  if arr.shape != ():
    raise ValueError(
        f"{what} must be a scalar loss, got an array of shape {arr.shape}."
        " Reduce it (e.g. with .mean()) inside the loss function."
    )
  if not (jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)):
    raise TypeError(f"{what} must be a real number, got dtype {arr.dtype}.")
  return arr.astype(base.loss_dtype())


def evaluate(value_fn: Callable[..., Any], params: Any, what: str = "value_fn(params)") -> jax.Array:
  """Evaluates ``value_fn(params)`` and checks that it is a real scalar."""
  return as_loss(value_fn(params), what)


def as_loss_and_scales(value: Any, params: Any, what: str) -> tuple[jax.Array, Any]:
  """Checks a ``(loss, scales)`` pair, as returned by a signal-norm loss.

  The loss must be a real scalar; ``scales`` a pytree like ``params`` whose
  leaves broadcast to the params leaves. The scales are returned broadcast to
  the params' shapes and cast to their dtypes, so that they can be cached in a
  state of fixed structure.
  """
  if not (isinstance(value, (tuple, list)) and len(value) == 2):
    raise TypeError(
        f"With signal_norm=True, {what} must return a pair (loss, scales), the"
        " scales a pytree like params of the multipliers lambda_i (for flax"
        " models use amc_jax.signal_norm_value_fn or amc_jax.signal_norm_apply);"
        f" got {type(value).__name__}."
    )
  loss, scales = value
  loss = as_loss(loss, f"the loss returned by {what}")
  check_scales(scales, params)
  scales = jax.tree_util.tree_map(
      lambda s, p: jnp.broadcast_to(jnp.asarray(s).astype(jnp.result_type(p)), jnp.shape(p)),
      scales,
      params,
  )
  return loss, scales


def evaluate_with_scales(
    value_fn: Callable[..., Any], params: Any, what: str = "value_fn(params)"
) -> tuple[jax.Array, Any]:
  """Evaluates a signal-norm ``value_fn(params) -> (loss, scales)`` and checks it."""
  return as_loss_and_scales(value_fn(params), params, what)


_BAD_CURRENT_LOSS = "amc_jax: the loss of the current params is nan (or -inf)"


def _not_our_error(record: logging.LogRecord) -> bool:
  # jax's pure_callback logs every exception of a callback with its traceback
  # ("jax.pure_callback failed") and then raises it again inside a
  # JaxRuntimeError, so an uncaught NaN error printed its message twice. The
  # JaxRuntimeError already carries the message and the traceback; drop the
  # log record for this one error (other callbacks' records are untouched).
  exc = record.exc_info[1] if record.exc_info else None
  return not (isinstance(exc, FloatingPointError) and str(exc).startswith(_BAD_CURRENT_LOSS))


logging.getLogger("jax._src.callback").addFilter(_not_our_error)


def _raise_bad_current_loss(bad, step=None):
  """Host side of the guard: raises if any loss is bad, else returns "not bad".

  ``step`` (the state's count, per chain under ``vmap``) names where.
  """
  bad = np.asarray(bad)
  if np.any(bad):
    where = ""
    if step is not None:
      steps = np.broadcast_to(np.asarray(step), bad.shape)
      if bad.ndim == 0:
        where = f" at step {int(steps)}"
      else:
        chains = np.argwhere(bad)
        shown = ", ".join(
            f"chain {tuple(int(i) for i in c) if len(c) > 1 else int(c[0])} at step {int(steps[tuple(c)])}"
            for c in chains[:5]
        )
        where = f" ({shown}{', ...' if len(chains) > 5 else ''})"
      where += (" (the state's count: steps this state has taken; in amc_jax.fit"
                " also the index t of that step's minibatch, drawn with"
                " jax.random.fold_in(data_key, t))")
    raise FloatingPointError(
        _BAD_CURRENT_LOSS + where + "; a Monte"
        " Carlo step needs a finite current loss to compare proposals against"
        " (check the initial params, the data of this step, or the value="
        " argument)."
    )
  return np.zeros(bad.shape, bool)


def _is_bad(loss: jax.Array) -> jax.Array:
  return jnp.isnan(loss) | (loss == -jnp.inf)


def _keep_alive(loss: jax.Array, still_bad: jax.Array) -> jax.Array:
  # Makes the returned loss depend on the guard, so that XLA keeps it. Not a
  # select between NaN and the loss: XLA folds that away when the loss itself
  # is a constant NaN, which is exactly when the guard must run.
  return loss + jnp.where(still_bad, jnp.full_like(loss, jnp.nan), jnp.zeros_like(loss))


def _host_check(bad: jax.Array, step: Optional[jax.Array] = None) -> jax.Array:
  """Runs :func:`_raise_bad_current_loss` on the host, once for all chains."""
  args = (bad,) if step is None else (bad, jnp.broadcast_to(step, jnp.shape(bad)))
  return jax.pure_callback(
      _raise_bad_current_loss,
      jax.ShapeDtypeStruct(jnp.shape(bad), jnp.bool_),
      *args,
      vmap_method="expand_dims",
  )


def checked_in_place(loss: jax.Array, step: Optional[jax.Array] = None) -> jax.Array:
  """The host check of :func:`check_current_loss`, without its loop.

  For code that already runs rarely (the first-step evaluation of batch
  mode): the callback runs every time this code does.
  """
  bad = _is_bad(loss)
  if base.is_concrete(bad) and (step is None or base.is_concrete(step)):
    _raise_bad_current_loss(bad, None if step is None else np.asarray(step))
    return loss
  return _keep_alive(loss, _host_check(bad, step))


def check_current_loss(loss: jax.Array, step: Optional[jax.Array] = None) -> jax.Array:
  """Raises ``FloatingPointError`` if the current loss is NaN or -inf.

  +inf is allowed: any finite proposal is then accepted. A concrete value is
  checked at once; a traced one by a host callback that sits inside a
  ``lax.while_loop`` that runs zero times unless the loss is bad, so a healthy
  step makes no host callback. Under ``vmap`` the loop runs if any chain is
  bad, and the callback is vectorised (``vmap_method="expand_dims"``): one
  callback for the whole ensemble, not one per chain. Under ``jit`` the error
  surfaces as a ``JaxRuntimeError`` whose text contains this message, and
  the step (``step``, the state's count, when given) where it happened.
  """
  bad = _is_bad(loss)
  if base.is_concrete(bad) and (step is None or base.is_concrete(step)):
    _raise_bad_current_loss(bad, None if step is None else np.asarray(step))
    return loss

  # The loop's result feeds the returned loss, so XLA cannot drop the loop as
  # dead code. Only the flag enters the loop: passing the loss in as well made
  # every step of a scan several times slower on XLA:CPU.
  still_bad = lax.while_loop(lambda b: b, lambda b: _host_check(b, step), bad)
  return _keep_alive(loss, still_bad)
