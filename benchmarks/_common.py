"""What every benchmark script shares: the machine record and the JSON output."""

import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time

import jax


def machine() -> dict:
  """Describes the machine and software a table was measured on."""
  return {
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(),
      "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "device": str(jax.devices()[0]),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def jsonable(x, digits: "int | None" = None):
  """``x`` with NumPy/JAX arrays and scalars as plain lists and numbers.

  Dict keys become strings, non-finite floats the strings "nan", "inf",
  "-inf" (JSON has no such numbers), and with ``digits`` every float is
  rounded to that many significant digits (to keep large records small).
  """
  if isinstance(x, dict):
    return {str(k): jsonable(v, digits) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v, digits) for v in x]
  if hasattr(x, "tolist"):  # NumPy and JAX arrays and scalars
    return jsonable(x.tolist(), digits)
  if isinstance(x, float):
    if not math.isfinite(x):
      return str(x)
    return float(f"{x:.{digits}g}") if digits else x
  return x


def dumps(obj, indent: int = 2, _level: int = 0) -> str:
  """JSON with dicts indented and lists of numbers kept on one line (compact arrays)."""
  pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
  if isinstance(obj, dict):
    if not obj:
      return "{}"
    items = [f"{inner}{json.dumps(str(k))}: {dumps(v, indent, _level + 1)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"
  if isinstance(obj, (list, tuple)):
    if all(not isinstance(v, (dict, list, tuple)) for v in obj):
      return json.dumps(list(obj))
    return "[\n" + ",\n".join(inner + dumps(v, indent, _level + 1) for v in obj) + "\n" + pad + "]"
  return json.dumps(obj)


ROOT = pathlib.Path(__file__).resolve().parent.parent  # the repository root


def command() -> str:
  """The command that ran this script, as run from the repository root.

  Scripts run as modules (``python -m benchmarks.paper.fig4_highfreq``), so
  ``sys.argv[0]`` is the module's file; it is recorded in the ``-m`` form.
  """
  script = pathlib.Path(sys.argv[0]).resolve()
  try:
    run = ["-m", ".".join(script.relative_to(ROOT).with_suffix("").parts)]
  except ValueError:
    run = [str(script)]
  return " ".join(["python", *run, *sys.argv[1:]])


QUICK_XLA_FLAG = "--xla_backend_optimization_level=0"


def quick_compile() -> None:
  """For --quick: XLA:CPU backend optimisation off, before JAX starts.

  A smoke test compiles ~10 programs and runs each for a few steps, so
  compile time is nearly all of it; this cuts it ~2.5x, with bit-identical
  numbers when checked. XLA reads ``XLA_FLAGS`` once, when JAX starts its
  backends, so call it before the first computation.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if QUICK_XLA_FLAG not in flags.split():
    os.environ["XLA_FLAGS"] = (flags + " " + QUICK_XLA_FLAG).strip()


def write_json(path, result: dict) -> None:
  """Writes ``result`` (with the machine added) as indented JSON, arrays inline."""
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(dumps({**result, "machine": machine()}) + "\n")
  print(f"wrote {out}")


def interleaved_times(fns: dict, repeats: int) -> tuple[dict, dict]:
  """Wall times of each zero-argument callable, repeats interleaved round-robin.

  Every callable runs once first (compile and warm up). Interleaving makes the
  rows of a table see the same load on a shared machine; measuring one row
  after another would not. Returns (median seconds, all samples) by name.
  """
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}, times
