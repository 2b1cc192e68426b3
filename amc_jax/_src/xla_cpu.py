"""The XLA:CPU workaround for jax issue 39103, in one place.

The bug: on CPU, XLA hands a reduction to YNNPACK (a ``__ynn_fusion``)
together with the matmul feeding it and, from jaxlib 0.10.2 on, with the
broadcast feeding that matmul (0.10.1 materialises the broadcast outside).
Some of these fusions compute wrong numbers: a matmul with a broadcast
operand (``x @ jnp.ones((5, 32))``, or a scalar argument broadcast to a
matrix) followed by a sum gives relative errors of 1e-3 up to inf/nan from
batch 128 on, and the issue's own reproducer (a vmapped ``eye(3) @ row``,
squared and summed per row) is wrong from row 32768 on. A matmul with a
dense weight matrix (closed over or an argument), the tanh MLP losses of
this library and plain reductions came out right.

Which versions (``benchmarks/studies/xla_cpu_bug.py``, 110 cases, float32, one
throwaway venv per version; results in
``benchmarks/results/xla_cpu_bug.json``):

* jaxlib 0.8.3, 0.9.0, 0.9.0.1, 0.9.1, 0.9.2, 0.10.0, 0.10.1: correct, also
  with the YNN reduce fusion forced on (``=reduce``);
* jaxlib 0.10.2, 0.11.0, 0.11.1, 0.11.2, 0.12.0, 0.12.0.1 (the newest on
  PyPI when measured): wrong, all of them: the broadcast-operand cases (20
  of 110) everywhere, the issue's own reproducer on 0.10.2 only.

No fixed release exists yet, so every jaxlib from 0.10.2 on counts as
affected (:data:`FIRST_AFFECTED_JAXLIB`); when a fixed one appears, rerun
the sweep in its venv and set :data:`FIRST_FIXED_JAXLIB`.

The flag: ``--xla_cpu_experimental_ynn_fusion_type=-reduce`` removes the
reduce type from XLA's default list of YNN fusion types; it fixes every case
on every affected version. It is the narrowest setting there is: the flag
only selects fusion *types* (dot, eltwise, reduce, individual_dot,
individual_convolution), and removing any type other than reduce leaves all
wrong cases wrong (measured on 0.10.2). Its cost is on large plain
reductions, which XLA then computes itself (the elementwise producer written
out, then a tree of reduce-windows): ``sum(x * x)`` over 60000x784 float32
takes 7-10x longer (0.10.2: 18-33 -> 180-250 ms, about what 0.10.1 takes
without any flag); the 784-16-16-10 MLP loss on 60000 examples 1.05-1.3x,
its gradient ~1.0x (2 shared cores, rough; ``benchmarks/studies/xla_cpu_bug.py --time``).
Rejected: ``-reduce,+eltwise`` (fast sums again, but YNN's eltwise fusion
gets the issue's reproducer wrong on 0.9.1-0.10.2) and an empty list (every
YNN fusion off: as slow, and wider).

When the flag is applied (:func:`use_xla_cpu_workaround`): only on an
affected jaxlib, and only if the CPU backend may run computations. Before
the backends start, the one safe signal is the platform list
(``JAX_PLATFORMS`` or ``jax.config.update("jax_platforms", ...)``): if it is
set and names no ``cpu``, CPU computations cannot happen and the flag is
skipped. Otherwise it is applied, also when an accelerator will be the
default device: JAX starts the CPU backend next to it (host-side
computations, ``jax.devices("cpu")``), and the flag changes only XLA:CPU's
compiler, so a GPU/TPU program pays nothing for it. Probing for an
accelerator (``jax.devices()``) would start the backends and make the flag
too late. An ``XLA_FLAGS`` that already sets
``--xla_cpu_experimental_ynn_fusion_type`` is left as the user wrote it.
Gating on the version also keeps the flag away from old jaxlibs (the
project allows >= 0.4.30): jaxlib 0.4.30 aborts at backend start with
"Unknown flags in XLA_FLAGS" (0.8.3 and later know the flag).

XLA reads ``XLA_FLAGS`` when JAX starts its backends (the first
computation), not when ``jax`` is imported. ``import amc_jax`` therefore
applies the flag itself (:func:`apply_at_import`) when it still can; if JAX
has computed something before amc_jax is imported, it is too late, and the
import warns once (:class:`XLACPUWorkaroundWarning`) saying what to do.
Setting the environment variable ``AMC_JAX_NO_XLA_CPU_WORKAROUND=1`` opts
out of both. :func:`use_xla_cpu_workaround` stays for programs that want to
apply (and check) it explicitly.
"""

from __future__ import annotations

import os
import re
import warnings

XLA_CPU_WORKAROUND_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"

# jaxlib versions (as tuples) between which jax issue 39103 is present:
# FIRST_AFFECTED_JAXLIB <= version < FIRST_FIXED_JAXLIB (None: not fixed yet).
FIRST_AFFECTED_JAXLIB = (0, 10, 2)
FIRST_FIXED_JAXLIB: "tuple[int, ...] | None" = None

_YNN_FLAG_NAME = XLA_CPU_WORKAROUND_FLAG.split("=", 1)[0]

# Set (to anything but "" or "0") to keep ``import amc_jax`` off XLA_FLAGS.
OPT_OUT_ENV = "AMC_JAX_NO_XLA_CPU_WORKAROUND"


class XLACPUWorkaroundWarning(UserWarning):
  """``import amc_jax`` came after JAX's first computation on an affected
  jaxlib: the XLA:CPU workaround for jax issue 39103 could not be applied."""


def _version_tuple(version: str) -> tuple[int, ...]:
  """The leading numeric release of a version string: "0.12.0.1" -> (0, 12, 0, 1)."""
  match = re.match(r"\d+(?:\.\d+)*", version.strip())
  if not match:
    raise ValueError(f"not a version: {version!r}")
  return tuple(int(part) for part in match.group(0).split("."))


def jaxlib_has_issue_39103(version: str) -> bool:
  """Whether this jaxlib version computes jax issue 39103's cases wrong on CPU.

  Pure (reads nothing but ``version``), e.g. ``"0.10.2"`` -> True,
  ``"0.10.1"`` -> False. Dev and rc builds count as their release
  (``"0.10.2.dev20260601"`` -> True).
  """
  v = _version_tuple(version)
  if v < FIRST_AFFECTED_JAXLIB:
    return False
  return FIRST_FIXED_JAXLIB is None or v < FIRST_FIXED_JAXLIB


def cpu_backend_may_run(platforms: "str | None") -> bool:
  """Whether CPU computations can happen under this JAX platform list.

  ``platforms`` is ``JAX_PLATFORMS`` / ``jax.config.jax_platforms`` (None or
  "" when unset: JAX then starts every backend it finds, CPU always among
  them). Pure.
  """
  if not platforms:
    return True
  return "cpu" in [p.strip().lower() for p in platforms.split(",")]


def xla_cpu_workaround_needed() -> bool:
  """Whether :func:`use_xla_cpu_workaround` would add its flag in this process.

  True on an affected jaxlib (:func:`jaxlib_has_issue_39103`) unless the
  platform list excludes CPU (:func:`cpu_backend_may_run`). Starts nothing.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jaxlib import version as jaxlib_version  # pylint: disable=g-import-not-at-top

  # jax reads JAX_PLATFORMS into its config at import; the config is what
  # the backends will obey.
  return (jaxlib_has_issue_39103(jaxlib_version.__version__)
          and cpu_backend_may_run(jax.config.jax_platforms))


def use_xla_cpu_workaround() -> bool:
  """Adds the XLA:CPU flag for jax issue 39103 to ``XLA_FLAGS`` where needed.

  Needed means an affected jaxlib (0.10.2 and later, see the module
  docstring) with the CPU backend among the platforms; elsewhere
  ``XLA_FLAGS`` is left alone. An ``XLA_FLAGS`` that already sets
  ``--xla_cpu_experimental_ynn_fusion_type`` (to anything) is also left
  alone. Call it before the first JAX computation of the process; later it
  has no effect, because the backends have read ``XLA_FLAGS`` already.

  Returns:
    True if nothing is needed, or if the flag is (now) in ``XLA_FLAGS`` in
    time to take effect; False if it is needed but JAX's backends had
    already started.

  Examples:
    First thing in a program, before any JAX computation:

    >>> import amc_jax
    >>> def main():
    ...   amc_jax.use_xla_cpu_workaround()
    ...   import jax, jax.numpy as jnp
    ...   return float(jax.jit(lambda x: jnp.sum(x @ jnp.ones((5, 32))))(jnp.ones((256, 5))))
    >>> main()                                   # 256 * 32 * 5, also on an affected jaxlib
    40960.0
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  if not xla_cpu_workaround_needed():
    return True
  flags = os.environ.get("XLA_FLAGS", "")
  if not any(f.split("=", 1)[0] == _YNN_FLAG_NAME for f in flags.split()):
    os.environ["XLA_FLAGS"] = (flags + " " + XLA_CPU_WORKAROUND_FLAG).strip()
  return not xla_bridge._backends  # pylint: disable=protected-access


def apply_at_import() -> bool:
  """What ``import amc_jax`` does: :func:`use_xla_cpu_workaround`, and a
  warning (once per process) when it is needed but too late.

  Skipped when ``AMC_JAX_NO_XLA_CPU_WORKAROUND`` is set (to anything but ""
  or "0"). Returns whether the process computes jax issue 39103's cases
  right as far as amc_jax can tell (True also when opted out).
  """
  if os.environ.get(OPT_OUT_ENV, "") not in ("", "0"):
    return True
  if use_xla_cpu_workaround():
    return True
  from jaxlib import version as jaxlib_version  # pylint: disable=g-import-not-at-top

  warnings.warn(
      f"jaxlib {jaxlib_version.__version__} computes some jitted CPU matmuls"
      " followed by a reduction wrong (jax issue 39103), and JAX had already"
      " started its backends when amc_jax was imported, so amc_jax could not"
      " apply the fix. Import amc_jax before the first JAX computation (or call"
      " amc_jax.use_xla_cpu_workaround() first thing), or start Python with"
      f" XLA_FLAGS={XLA_CPU_WORKAROUND_FLAG}. Set {OPT_OUT_ENV}=1 to silence"
      " this.",
      XLACPUWorkaroundWarning,
      stacklevel=3,
  )
  return False
