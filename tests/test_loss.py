"""amc_jax._src.loss: what a loss must be, and the guard on the current loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amc_jax._src import loss as loss_lib


def test_a_loss_is_a_real_scalar_in_the_loss_dtype():
  assert loss_lib.as_loss(jnp.int32(3), "value").dtype == jnp.float32
  with pytest.raises(ValueError, match=r"value must be a scalar loss, got an array of shape \(2,\)"):
    loss_lib.as_loss(jnp.zeros(2), "value")
  with pytest.raises(TypeError, match="must be a real number, got dtype complex64"):
    loss_lib.as_loss(jnp.complex64(1.0), "value")


def test_scales_are_checked_and_broadcast_like_the_params():
  params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
  loss, scales = loss_lib.as_loss_and_scales((1.0, {"w": jnp.ones((1, 3)), "b": 2.0}), params, "f")
  assert scales["w"].shape == (2, 3) and scales["b"].shape == (3,) and float(loss) == 1.0
  with pytest.raises(TypeError, match="must return a pair"):
    loss_lib.as_loss_and_scales(1.0, params, "f")
  with pytest.raises(ValueError, match="same pytree structure"):
    loss_lib.check_scales({"w": jnp.ones((2, 3))}, params)
  with pytest.raises(ValueError, match=r"scales leaf \['w'\] has shape \(4,\)"):
    loss_lib.check_scales({"w": jnp.ones(4), "b": jnp.ones(3)}, params)


def test_the_current_loss_guard_passes_finite_and_inf_and_names_the_step_of_a_nan():
  assert float(loss_lib.check_current_loss(jnp.float32(2.0))) == 2.0
  assert float(loss_lib.check_current_loss(jnp.float32(np.inf))) == np.inf
  with pytest.raises(FloatingPointError, match="at step 7"):
    loss_lib.check_current_loss(jnp.float32(np.nan), jnp.int32(7))
  with pytest.raises(FloatingPointError, match=r"nan \(or -inf\)"):
    loss_lib.check_current_loss(jnp.float32(-np.inf))
  # Traced and healthy: the host is never called, and the value is unchanged.
  out = jax.jit(lambda x: loss_lib.check_current_loss(x, jnp.int32(0)))(jnp.float32(1.5))
  assert float(out) == 1.5
