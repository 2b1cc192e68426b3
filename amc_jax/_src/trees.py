"""Pytree helpers used across the library: one of each.

:func:`leaf_name` (a key path in messages), :func:`leading_size` (the
common leading axis of a pytree: chains, replicas, examples), :func:`take`
(one entry of that axis, e.g. one chain), and :func:`check_int` (a Python
int argument with a lower bound).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

PyTree = Any


def leaf_name(path: Any) -> str:
  """A leaf's key path as error messages print it (``['w']``; ``<root>``)."""
  return jax.tree_util.keystr(path) or "<root>"


def leading_size(tree: Any, what: str, purpose: str) -> int:
  """The common size of the leading axis of every leaf of ``tree``.

  ``what`` names the tree and ``purpose`` why it needs the axis ("to shard"),
  in the error raised for an empty tree, a scalar leaf or unequal sizes.
  """
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  if not leaves:
    raise ValueError(f"{what} must contain at least one array; got an empty pytree.")
  sizes = {}
  for path, leaf in leaves:
    shape = np.shape(leaf)
    if not shape:
      raise ValueError(
          f"every leaf of {what} needs a leading axis {purpose}; the leaf"
          f" {leaf_name(path)} is a scalar leaf."
      )
    sizes.setdefault(shape[0], leaf_name(path))
  if len(sizes) != 1:
    examples = ", ".join(f"{name} has {n}" for n, name in sorted(sizes.items()))
    raise ValueError(
        f"every leaf of {what} must have the same leading axis size; got sizes"
        f" {sorted(sizes)} (the leaf {examples})."
    )
  (size,) = sizes
  return size


def take(tree: PyTree, index: Any) -> PyTree:
  """``x[index]`` for every leaf ``x`` of ``tree`` (e.g. one chain of an ensemble)."""
  return jax.tree_util.tree_map(lambda x: x[index], tree)


def check_int(name: str, x: Any, minimum: int) -> int:
  """``x`` as a Python int, raising unless it is an int (not a bool) >= ``minimum``."""
  if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
    raise TypeError(f"{name} must be an int, got {x!r}.")
  if x < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {x!r}.")
  return int(x)
