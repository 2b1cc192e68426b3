"""The checks and small helpers of ``amc_jax._src.base``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from amc_jax._src import base


@pytest.mark.parametrize("check, good, bad", [
    (base.check_positive, [1e-3, 2, np.float32(0.5), jnp.float32(1.0)], [0.0, -1.0, np.inf, np.nan]),
    (base.check_finite, [0.0, -3.0, 1e30], [np.inf, -np.inf, np.nan]),
    (base.check_unit_interval, [1.0, 0.5, 1e-9], [0.0, 1.5, -0.1]),
    (base.check_count, [1, 7, 3.0, np.int32(2)], [0, -1, 2.5]),
])
def test_scalar_checks_accept_good_and_name_bad_values(check, good, bad):
  for x in good:
    check("thing", x)
  for x in bad:
    with pytest.raises(ValueError, match="thing"):
      check("thing", x)
  with pytest.raises(TypeError, match="thing must be a number"):
    check("thing", True)
  with pytest.raises(ValueError, match="scalar"):
    check("thing", np.ones(2))
  # Traced values are not checked (nothing concrete to check).
  jax.jit(lambda x: check("thing", x) or x)(jnp.float32(-1.0))


def test_check_temperature_constants_and_schedules():
  base.check_temperature(0.0)
  base.check_temperature(optax.linear_schedule(1.0, 0.0, 10))
  with pytest.raises(ValueError, match=">= 0"):
    base.check_temperature(-0.1)
  with pytest.raises(ValueError, match="count 0"):
    base.check_temperature(lambda count: -1.0)
  with pytest.raises(ValueError, match="scalar"):
    base.check_temperature(lambda count: jnp.ones(2))
  with pytest.raises(TypeError, match="schedule"):
    base.check_temperature(lambda: 1.0)


def test_is_static_zero():
  assert base.is_static_zero(0.0) and base.is_static_zero(np.float32(0))
  assert not base.is_static_zero(1e-30) and not base.is_static_zero(lambda c: 0.0)
  assert not jax.jit(lambda x: jnp.float32(base.is_static_zero(x)))(0.0)


def test_as_key_accepts_every_seed_form_and_names_the_argument():
  ref = jax.random.key_data(jax.random.key(3))
  for seed in (3, np.int64(3), jax.random.key(3), jax.random.PRNGKey(3), jnp.int32(3)):
    np.testing.assert_array_equal(jax.random.key_data(base.as_key(seed)), ref)
  for bad in (True, 1.5, "3", jnp.zeros(3, jnp.float32)):
    with pytest.raises(TypeError, match="my_seed"):
      base.as_key(bad, "my_seed")


def test_accumulator_dtype_and_global_norm():
  bf = {"a": jnp.full((1000,), 3.0, jnp.bfloat16)}
  assert base.accumulator_dtype(jax.tree_util.tree_leaves(bf)) == jnp.float32
  # 1000 squares of 3 summed in float32 (bfloat16 squares would round).
  assert float(base.global_norm(bf)) == pytest.approx(np.sqrt(9000.0), rel=1e-6)
  assert float(base.global_norm({})) == 0.0
  tree = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
  assert float(base.global_norm(tree)) == pytest.approx(5.0)


def test_materialised_is_the_identity_and_survives_jit_and_vmap():
  tree = {"a": jnp.arange(5.0), "b": jnp.ones((2, 3), jnp.bfloat16)}
  for flag in (jnp.bool_(False), jnp.bool_(True)):
    out = jax.jit(base.materialised)(tree, flag)
    for x, y in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(tree)):
      assert x.dtype == y.dtype
      np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
  batched = jax.vmap(lambda t: base.materialised(t, jnp.bool_(False)))(
      {"a": jnp.arange(6.0).reshape(2, 3)})
  np.testing.assert_array_equal(batched["a"], np.arange(6.0).reshape(2, 3))
