"""Test configuration: strict JAX numerics, and the XLA:CPU workaround.

jaxlib 0.10.2 and 0.12.0.1 return wrong numbers on CPU for a jitted matmul
with a constant operand followed by a reduction at batch >= 128 (jax issue
39103). The flag below avoids it; it must be set before JAX initialises its
backend, hence here, before anything imports jax.
"""

import os

_WORKAROUND = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
if _WORKAROUND not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _WORKAROUND).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
  """Enables float64 for one test."""
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)
