"""Shared types and input validation for amc_jax transformations.

Hyperparameters are validated eagerly, at construction, with the offending
value in the message (the ``optax.contrib.reduce_on_plateau`` habit). Values
that are tracers (for example under ``optax.inject_hyperparams`` inside a
jitted update) cannot be inspected and are let through: their ranges were
checked when the transformation was first built from concrete numbers.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Scalar = Union[float, int, jax.Array]
ScalarOrSchedule = Union[Scalar, Callable[[jax.Array], jax.Array]]
PRNGKeyLike = Union[int, jax.Array]


def is_concrete(x: Any) -> bool:
  """True when ``x`` is a Python/NumPy number or a non-traced JAX value."""
  return not isinstance(x, jax.core.Tracer)


def _scalar_value(name: str, x: Any) -> float | None:
  """Returns ``x`` as a float if it is concrete, else ``None`` (traced)."""
  if isinstance(x, bool) or isinstance(x, np.bool_):
    raise TypeError(f"{name} must be a number, got the boolean {x!r}.")
  if not is_concrete(x):
    return None
  if isinstance(x, numbers.Real):
    return float(x)
  arr = np.asarray(x)
  if arr.shape != ():
    raise ValueError(f"{name} must be a scalar, got an array of shape {arr.shape}.")
  if not (
      jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)
  ):
    raise TypeError(f"{name} must be a real number, got dtype {arr.dtype}.")
  return float(arr)


def check_positive(name: str, x: Any) -> None:
  v = _scalar_value(name, x)
  if v is not None and not (math.isfinite(v) and v > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {x!r}.")


def check_finite(name: str, x: Any) -> None:
  v = _scalar_value(name, x)
  if v is not None and not math.isfinite(v):
    raise ValueError(f"{name} must be finite, got {x!r}.")


def check_unit_interval(name: str, x: Any) -> None:
  """Checks ``0 < x <= 1``."""
  v = _scalar_value(name, x)
  if v is not None and not (0.0 < v <= 1.0):
    raise ValueError(f"{name} must lie in (0, 1], got {x!r}.")


def check_count(name: str, x: Any) -> None:
  """Checks that ``x`` is an integer >= 1."""
  v = _scalar_value(name, x)
  if v is None:
    return
  if isinstance(x, numbers.Real) and not isinstance(x, numbers.Integral):
    if not float(x).is_integer():
      raise ValueError(f"{name} must be an integer >= 1, got {x!r}.")
  if not v >= 1:
    raise ValueError(f"{name} must be an integer >= 1, got {x!r}.")


def check_temperature(temperature: ScalarOrSchedule) -> None:
  """Temperatures are >= 0; a schedule is checked at step 0."""
  if callable(temperature):
    try:
      t0 = temperature(jnp.zeros([], jnp.int32))
    except Exception as e:  # pylint: disable=broad-except
      raise TypeError(
          "temperature schedule must be callable as schedule(count) with an"
          f" integer step count; calling it at count 0 failed with: {e!r}"
      ) from e
    if is_concrete(t0):
      arr = np.asarray(t0)
      if arr.shape != ():
        raise ValueError(
            "temperature schedule must return a scalar, got shape"
            f" {arr.shape} at count 0."
        )
      if not (np.isfinite(arr) and arr >= 0):
        raise ValueError(
            f"temperature must be finite and >= 0, the schedule gives {arr!r}"
            " at count 0."
        )
    return
  v = _scalar_value("temperature", temperature)
  if v is not None and not (math.isfinite(v) and v >= 0):
    raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}.")


def is_static_zero(x: Any) -> bool:
  """True when ``x`` is a concrete number known to be exactly zero."""
  if callable(x) or not is_concrete(x):
    return False
  try:
    return float(np.asarray(x)) == 0.0
  except (TypeError, ValueError):
    return False


def as_key(seed: PRNGKeyLike, name: str = "seed") -> jax.Array:
  """Turns an int seed, a raw uint32 key or a typed key into a typed key."""
  if isinstance(seed, (bool, np.bool_)):
    raise TypeError(f"{name} must be an int or a jax.random.key, got {seed!r}.")
  if isinstance(seed, numbers.Integral):
    return jax.random.key(int(seed))
  if isinstance(seed, (jax.Array, np.ndarray)) or hasattr(seed, "dtype"):
    dtype = seed.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
      return seed
    if jnp.issubdtype(dtype, jnp.integer):
      if jnp.ndim(seed) == 0:
        return jax.random.key(seed)
      if jnp.shape(seed)[-1:] == (2,) and dtype == jnp.uint32:
        # A legacy ``jax.random.PRNGKey`` (raw threefry key data).
        return jax.random.wrap_key_data(seed)
    raise TypeError(
        f"{name} must be an int or a jax.random.key, got an array of dtype"
        f" {dtype} and shape {jnp.shape(seed)}."
    )
  raise TypeError(f"{name} must be an int or a jax.random.key, got {seed!r}.")


def loss_dtype() -> jnp.dtype:
  """The dtype in which losses and step sizes are kept: JAX's default float."""
  return jnp.result_type(float)


def accumulator_dtype(leaves) -> jnp.dtype:
  """float64 if any leaf is float64, else float32 (bfloat16 and float16 widen)."""
  wide = any(jnp.result_type(x) == jnp.float64 for x in leaves)
  return jnp.dtype(jnp.float64) if wide else jnp.dtype(jnp.float32)


def global_norm(tree: Any) -> jax.Array:
  """sqrt(sum_i x_i^2) over every leaf, accumulated in at least float32.

  Unlike ``optax.global_norm`` it does not square bfloat16 leaves in
  bfloat16. An empty pytree has norm 0.
  """
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    return jnp.zeros([], jnp.float32)
  acc = accumulator_dtype(leaves)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(acc))) for x in leaves))


def materialised(tree: Any, flag: jax.Array) -> Any:
  """``tree``, computed once into buffers of its own before anything reads it.

  Otherwise XLA may fuse the move's draw (random bits -> erfinv) into the
  loss's data-sized fusions and recompute it for every data point: 4-16x
  slower steps for losses written with broadcasting, einsum or vmap.
  ``lax.optimization_barrier`` does not hold on XLA:CPU (its expander runs
  before fusion), but XLA does not fuse across a while loop, so the tree
  passes through one that runs 0 times (1 when ``flag``, a runtime value XLA
  cannot predict), and whose body changes the tree through a select on the
  loop's own flag, so that XLA cannot treat the tree as loop invariant.
  The body is the identity whenever it runs.
  """
  def body(carry):
    run, t = carry
    return jnp.zeros_like(run), jax.tree_util.tree_map(
        lambda x: jnp.where(run, x, jnp.zeros_like(x)), t
    )

  return lax.while_loop(lambda carry: carry[0], body, (flag, tree))[1]
