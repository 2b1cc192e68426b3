"""The XLA:CPU workaround helper sets the flag, and says when it is too late."""

import os
import subprocess
import sys

import numpy as np

import amc_jax

SCRIPT = """
import os
import amc_jax
print(amc_jax.use_xla_cpu_workaround())
print(os.environ["XLA_FLAGS"].split().count(amc_jax._src.xla_cpu.XLA_CPU_WORKAROUND_FLAG))
print(amc_jax.use_xla_cpu_workaround())  # idempotent
import jax, jax.numpy as jnp, numpy as np
x = jnp.asarray(np.random.default_rng(0).normal(size=(256, 5)).astype(np.float32))
f = jax.jit(lambda x: (x @ jnp.ones((5, 32), jnp.float32)).sum(0))  # jax issue 39103
print(np.allclose(f(x), (np.asarray(x) @ np.ones((5, 32), np.float32)).sum(0), rtol=1e-4, atol=1e-3))
print(amc_jax.use_xla_cpu_workaround())  # the backend has started: too late now
"""


def test_workaround_in_a_fresh_process():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
      [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["True", "1", "True", "True", "False"]


def test_matmul_then_reduce_matches_numpy_in_this_process():
  """The pattern of jax issue 39103 under the test suite's own flags."""
  import jax
  import jax.numpy as jnp

  x = np.random.default_rng(1).normal(size=(512, 5)).astype(np.float32)
  f = jax.jit(lambda x: (x @ jnp.ones((5, 32), jnp.float32)).sum(0))
  np.testing.assert_allclose(f(jnp.asarray(x)), (x @ np.ones((5, 32), np.float32)).sum(0), rtol=1e-4, atol=1e-3)
  assert not amc_jax.use_xla_cpu_workaround()  # backends already running
