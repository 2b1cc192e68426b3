"""The XLA:CPU workaround for jax issue 39103, in one place.

jaxlib 0.10.2 and 0.12.0.1 return wrong numbers on CPU for a jitted matmul
with a constant operand followed by a reduction at batch >= 128; turning off
YNN's reduce fusion avoids it. XLA reads ``XLA_FLAGS`` when JAX starts its
backends (the first computation), not when ``jax`` is imported, so programs
call :func:`use_xla_cpu_workaround` first thing in ``main``.
"""

import os

XLA_CPU_WORKAROUND_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"


def use_xla_cpu_workaround() -> bool:
  """Adds the XLA:CPU flag for jax issue 39103 to ``XLA_FLAGS``.

  Call it before the first JAX computation of the process; later it has no
  effect, because the backends have read ``XLA_FLAGS`` already.

  Returns:
    True if the flag is (now) in ``XLA_FLAGS`` in time to take effect, False
    if JAX's backends had already started.
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  flags = os.environ.get("XLA_FLAGS", "")
  if XLA_CPU_WORKAROUND_FLAG not in flags.split():
    os.environ["XLA_FLAGS"] = (flags + " " + XLA_CPU_WORKAROUND_FLAG).strip()
  return not xla_bridge._backends  # pylint: disable=protected-access
