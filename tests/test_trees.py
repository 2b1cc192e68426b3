"""amc_jax._src.trees: the one leading_size, take and check_int."""

import jax.numpy as jnp
import numpy as np
import pytest

from amc_jax._src import trees


def test_leading_size_of_a_tree_and_its_errors():
  assert trees.leading_size({"a": jnp.zeros((4, 2)), "b": [jnp.zeros(4)]}, "params", "") == 4
  with pytest.raises(ValueError, match="params must contain at least one array"):
    trees.leading_size({}, "params", "")
  with pytest.raises(ValueError, match=r"needs a leading axis \(of chains\); the leaf \['b'\] is a scalar leaf"):
    trees.leading_size({"a": jnp.zeros(3), "b": jnp.zeros(())}, "params", "(of chains)")
  with pytest.raises(ValueError, match=r"same leading axis size; got sizes \[2, 3\]"):
    trees.leading_size({"a": jnp.zeros(3), "b": jnp.zeros((2, 5))}, "data", "")


def test_take_indexes_every_leaf():
  tree = {"w": jnp.arange(6.0).reshape(3, 2), "b": jnp.arange(3)}
  one = trees.take(tree, 1)
  np.testing.assert_array_equal(one["w"], [2.0, 3.0])
  assert int(one["b"]) == 1
  two = trees.take(tree, jnp.asarray([2, 0]))
  np.testing.assert_array_equal(two["b"], [2, 0])


def test_check_int():
  assert trees.check_int("steps", 3, 1) == 3 and isinstance(trees.check_int("n", np.int64(2), 0), int)
  for bad, error in ((True, TypeError), (2.0, TypeError), ("3", TypeError), (0, ValueError)):
    with pytest.raises(error, match="steps must be"):
      trees.check_int("steps", bad, 1)
