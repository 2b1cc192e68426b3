"""Test configuration: strict JAX numerics, and the XLA:CPU workaround.

jaxlib 0.10.2 and later return wrong numbers on CPU for some jitted matmuls
with a broadcast operand followed by a reduction (jax issue 39103; see
amc_jax/_src/xla_cpu.py for the versions measured). The library's helper
adds the workaround flag on affected versions; it must run before JAX
initialises its backend, hence here, before any test computes anything.
"""

from amc_jax._src.xla_cpu import use_xla_cpu_workaround

use_xla_cpu_workaround()

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


# End-to-end runs: each starts fresh Python processes (benchmarks and paper
# scripts in small configurations, the notebooks, the docs build, multi-process
# sharding). CI runs them; `pytest -m "not slow"` skips them for local work.
_END_TO_END_FILES = ("test_benchmarks_speed.py", "test_benchmarks_studies.py", "test_benchmarks_control.py",
                     "test_benchmarks_paper.py", "test_notebooks.py", "test_docs.py")
_END_TO_END_TESTS = ("test_example_two_processes_match_one",)


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    name = item.path.name
    if (name in _END_TO_END_FILES
        or getattr(item, "originalname", None) in _END_TO_END_TESTS):
      item.add_marker(pytest.mark.slow)
