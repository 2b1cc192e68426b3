"""Trial moves: the Gaussian proposal of Eq. (9) over a params pytree."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def _leaf_name(path) -> str:
  return jax.tree_util.keystr(path) or "<root>"


def check_params(params: PyTree) -> None:
  """Raises if ``params`` is empty or holds a leaf that is not floating point."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  if not leaves:
    raise ValueError("params must contain at least one array; got an empty pytree.")
  for path, leaf in leaves:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          "amc_jax moves floating-point parameters only; the leaf"
          f" {_leaf_name(path)} has dtype {dtype}. Keep integer or boolean"
          " state out of the params pytree."
      )


def noise_dtype(params: PyTree) -> jnp.dtype:
  """The dtype of the standard normals drawn for ``params``.

  The widest floating dtype among the leaves, and at least float32, so that
  bfloat16 params receive float32 normals rounded once to bfloat16.
  """
  widest = jnp.dtype(jnp.float32)
  for leaf in jax.tree_util.tree_leaves(params):
    dtype = jnp.dtype(jnp.result_type(leaf))
    if dtype.itemsize > widest.itemsize:
      widest = dtype
  return widest


def standard_normal_like(key: jax.Array, params: PyTree) -> PyTree:
  """Standard normals with the structure, shapes and dtypes of ``params``.

  One flat draw of ``N = sum(leaf.size)`` numbers (in :func:`noise_dtype`),
  cut into the leaves in ``jax.tree_util.tree_leaves`` order. A single draw is
  cheaper than one per leaf, and it makes the random stream easy to replay:
  the normals of a step are ``jax.random.normal(key, (N,), noise_dtype)``.
  """
  leaves, treedef = jax.tree_util.tree_flatten(params)
  sizes = [int(np.prod(jnp.shape(x), dtype=np.int64)) for x in leaves]
  z = jax.random.normal(key, (sum(sizes),), noise_dtype(params))
  out, offset = [], 0
  for leaf, size in zip(leaves, sizes):
    piece = z[offset : offset + size].reshape(jnp.shape(leaf))
    out.append(piece.astype(jnp.result_type(leaf)))
    offset += size
  return jax.tree_util.tree_unflatten(treedef, out)


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
          f"scales leaf {_leaf_name(path)} has shape {s_shape}, which does not"
          f" broadcast to the params leaf shape {p_shape}."
      )
    if not jnp.issubdtype(jnp.result_type(s), jnp.number):
      raise TypeError(
          f"scales leaf {_leaf_name(path)} must be numeric, got dtype"
          f" {jnp.result_type(s)}."
      )


def gaussian_move(
    key: jax.Array,
    mu: PyTree,
    sigma: jax.Array,
    scales: Optional[PyTree] = None,
) -> PyTree:
  r"""Draws the move of Eq. (9): :math:`\epsilon_i \sim N(\mu_i, (\lambda_i\sigma)^2)`.

  Computed leaf by leaf in the leaf's dtype as
  ``eps = mu + (sigma * lambda) * z`` (``eps = mu + sigma * z`` without
  scales), with ``z`` from :func:`standard_normal_like`.

  Args:
    key: PRNG key for this move.
    mu: pytree of proposal centres, shaped and typed like the params.
    sigma: scalar step size.
    scales: optional pytree like ``mu`` of multipliers ``lambda_i``.

  Returns:
    The move ``eps``, a pytree like ``mu``.
  """
  z = standard_normal_like(key, mu)

  def leaf_move(m, zi, lam):
    dtype = jnp.result_type(m)
    step = sigma.astype(dtype)
    if lam is not None:
      step = step * jnp.broadcast_to(jnp.asarray(lam).astype(dtype), jnp.shape(m))
    move = step * zi
    return m + move

  if scales is None:
    return jax.tree_util.tree_map(lambda m, zi: leaf_move(m, zi, None), mu, z)
  return jax.tree_util.tree_map(leaf_move, mu, z, scales)
