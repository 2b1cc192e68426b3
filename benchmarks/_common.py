"""What every benchmark script shares: the machine record and the JSON output."""

import json
import os
import pathlib
import platform

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


def write_json(path, result: dict) -> None:
  """Writes ``result`` (with the machine added) as indented JSON."""
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
  print(f"wrote {out}")
