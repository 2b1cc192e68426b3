"""The XLA:CPU workaround helper: which jaxlibs need it, that it sets the flag
only then, says when it is too late, and that the results match NumPy."""

import os
import subprocess
import sys

import numpy as np
import pytest

import amc_jax
from amc_jax._src import xla_cpu

SCRIPT = """
import os
import amc_jax
from amc_jax._src import xla_cpu
print(xla_cpu.xla_cpu_workaround_needed())
print(amc_jax.use_xla_cpu_workaround())
print(os.environ.get("XLA_FLAGS", "").split().count(xla_cpu.XLA_CPU_WORKAROUND_FLAG))
print(amc_jax.use_xla_cpu_workaround())  # idempotent
import jax, jax.numpy as jnp, numpy as np
x = jnp.asarray(np.random.default_rng(0).normal(size=(256, 5)).astype(np.float32))
f = jax.jit(lambda x: (x @ jnp.ones((5, 32), jnp.float32)).sum(0))  # jax issue 39103
print(np.allclose(f(x), (np.asarray(x) @ np.ones((5, 32), np.float32)).sum(0), rtol=1e-4, atol=1e-3))
print(amc_jax.use_xla_cpu_workaround())  # the backend has started: too late now, if needed
"""


def _run(script, **env_changes):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(env_changes)
  out = subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.split()


# benchmarks/results/xla_cpu_bug.json: jax issue 39103's cases computed
# wrong (True) or right (False) without any flag, one venv per jaxlib.
MEASURED = {
    "0.8.3": False, "0.9.0": False, "0.9.0.1": False, "0.9.1": False, "0.9.2": False,
    "0.10.0": False, "0.10.1": False, "0.10.2": True, "0.11.0": True, "0.11.1": True,
    "0.11.2": True, "0.12.0": True, "0.12.0.1": True,
}


@pytest.mark.parametrize("version", list(MEASURED))
def test_affected_versions_are_the_measured_ones(version):
  assert xla_cpu.jaxlib_has_issue_39103(version) == MEASURED[version]


def test_affected_version_edge_cases():
  assert xla_cpu.jaxlib_has_issue_39103("0.10.2")
  assert not xla_cpu.jaxlib_has_issue_39103("0.10.1")
  assert not xla_cpu.jaxlib_has_issue_39103("0.4.30")
  assert xla_cpu.jaxlib_has_issue_39103("0.10.2.dev20260601")  # a build of 0.10.2
  assert xla_cpu.jaxlib_has_issue_39103("0.13.0")  # no fixed release known: assume affected
  with pytest.raises(ValueError):
    xla_cpu.jaxlib_has_issue_39103("nightly")


def test_cpu_backend_may_run():
  assert xla_cpu.cpu_backend_may_run(None)
  assert xla_cpu.cpu_backend_may_run("")
  assert xla_cpu.cpu_backend_may_run("cpu")
  assert xla_cpu.cpu_backend_may_run("cuda,cpu")
  assert not xla_cpu.cpu_backend_may_run("cuda")
  assert not xla_cpu.cpu_backend_may_run("tpu")


def test_workaround_in_a_fresh_process():
  needed, *rest = _run(SCRIPT)
  import jaxlib.version  # pylint: disable=g-import-not-at-top

  assert needed == str(xla_cpu.jaxlib_has_issue_39103(jaxlib.version.__version__))
  if needed == "True":
    assert rest == ["True", "1", "True", "True", "False"]
  else:  # nothing to do, so nothing is late either; XLA_FLAGS untouched
    assert rest == ["True", "0", "True", "True", "True"]


def test_workaround_skipped_when_the_platforms_exclude_cpu():
  script = SCRIPT.split("import jax,")[0]  # no computation: there may be no GPU here
  assert _run(script, JAX_PLATFORMS="cuda") == ["False", "True", "0", "True"]


def test_workaround_keeps_an_explicit_ynn_setting():
  own = "--xla_cpu_experimental_ynn_fusion_type="  # the user's: every YNN fusion off
  script = "import os, amc_jax\namc_jax.use_xla_cpu_workaround()\nprint(repr(os.environ['XLA_FLAGS']))"
  assert _run(script, XLA_FLAGS=own) == [repr(own)]


def _issue_39103(n):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  x = np.stack([np.arange(n), np.zeros(n), np.zeros(n)], axis=1).astype(np.float32)
  f = lambda x: jax.vmap(lambda row: jnp.sum((jnp.eye(3, dtype=jnp.float32) @ row) ** 2))(x)
  expected = np.arange(n, dtype=np.float64) ** 2
  return f, (x,), expected, np.maximum(expected, 1.0)


def _ones_matmul_sum(n):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  x = np.random.default_rng(1).normal(size=(n, 5)).astype(np.float32)
  f = lambda x: (x @ jnp.ones((5, 32), jnp.float32)).sum(0)
  x64 = x.astype(np.float64)
  return f, (x,), (x64 @ np.ones((5, 32))).sum(0), (np.abs(x64) @ np.ones((5, 32))).sum(0)


def _scalar_matmul_sum(n):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  x = np.random.default_rng(2).normal(size=(n, 784)).astype(np.float32)
  f = lambda x, c: (x @ jnp.broadcast_to(c, (784, 16))).sum()
  x64 = x.astype(np.float64)
  return f, (x, np.float32(1.5)), x64.sum() * 1.5 * 16, np.abs(x64).sum() * 1.5 * 16


@pytest.mark.parametrize("case,n", [
    (_ones_matmul_sum, 512), (_scalar_matmul_sum, 1024), (_issue_39103, 32769),
])
def test_matmul_then_reduce_matches_numpy_in_this_process(case, n):
  """Patterns of jax issue 39103 under the test suite's own flags."""
  import jax  # pylint: disable=g-import-not-at-top

  f, args, expected, scale = case(n)  # scale: the same sum of |terms|
  got = np.asarray(jax.jit(f)(*args), np.float64)
  assert np.all(np.abs(got - expected) <= 1e-5 * scale), np.max(np.abs(got - expected) / scale)
  # The backends are running: too late if the flag is needed, fine if not.
  assert amc_jax.use_xla_cpu_workaround() == (not xla_cpu.xla_cpu_workaround_needed())


IMPORT_ONLY = """
import os
import amc_jax
from amc_jax._src import xla_cpu
print(os.environ.get("XLA_FLAGS", "").split().count(xla_cpu.XLA_CPU_WORKAROUND_FLAG))
import jax, jax.numpy as jnp, numpy as np
x = jnp.asarray(np.random.default_rng(0).normal(size=(256, 5)).astype(np.float32))
f = jax.jit(lambda x: (x @ jnp.ones((5, 32), jnp.float32)).sum(0))  # jax issue 39103
print(np.allclose(f(x), (np.asarray(x) @ np.ones((5, 32), np.float32)).sum(0), rtol=1e-4, atol=1e-3))
"""


def _needed_here():
  import jaxlib.version  # pylint: disable=g-import-not-at-top

  return xla_cpu.jaxlib_has_issue_39103(jaxlib.version.__version__)


def test_importing_amc_jax_applies_the_workaround():
  """No call needed: ``import amc_jax`` sets the flag on an affected jaxlib
  (the README's example program then matches NumPy), and the opt-out
  variable keeps XLA_FLAGS untouched."""
  count, right = _run(IMPORT_ONLY)
  assert count == ("1" if _needed_here() else "0")
  assert right == "True"
  count, _ = _run(IMPORT_ONLY, **{xla_cpu.OPT_OUT_ENV: "1"})
  assert count == "0"


def test_importing_amc_jax_too_late_warns_once_saying_what_to_do():
  late = ("import warnings\nwarnings.simplefilter('always')\n"
          "import jax.numpy as jnp\nfloat(jnp.ones(3).sum())  # the backends start\n"
          "with warnings.catch_warnings(record=True) as seen:\n"
          "  warnings.simplefilter('always')\n"
          "  import amc_jax\n"
          "  import amc_jax.proposals\n"
          "print(sum(issubclass(w.category, amc_jax.XLACPUWorkaroundWarning) for w in seen))\n"
          "print(any('Import amc_jax before the first JAX computation' in str(w.message)"
          " for w in seen))\n")
  count, message = _run(late)
  if _needed_here():
    assert (count, message) == ("1", "True")
  else:
    assert (count, message) == ("0", "False")
  assert _run(late, **{xla_cpu.OPT_OUT_ENV: "1"})[0] == "0"
