"""What every paper-reproduction script shares: CLI, data, JSON and plots.

Each script in ``benchmarks/paper/`` reproduces one result of Whitelam et al.
(2022), "Training neural networks using Metropolis Monte Carlo and an adaptive
variant", through the public API of amc_jax (``amc``, ``metropolis``, ``fit``)
with gradient baselines through optax in the same ``fit`` loop. Each has a
``--quick`` mode (a smoke test, under two minutes on 2 CPU cores; run by
``tests/test_paper_benchmarks.py``) and a full mode, and writes
``benchmarks/results/paper_<name>.json`` and ``.png`` (or under ``--out-dir``).

Data for the MNIST-format results: a directory of the standard IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; uncompressed
files without ``.gz`` work too), given by ``--data-dir`` or the environment
variable ``AMC_JAX_DATA_DIR``; default ``/usr/share/datasets/fashion-mnist``,
where Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = HERE.parent
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402  benchmarks/_common.py
from _mnist import DATA_DIR_ENV, DEFAULT_DATA_DIR  # noqa: E402,F401  benchmarks/_mnist.py
from _mnist import data_dir, load_mnist, read_idx, write_idx  # noqa: E402,F401

RESULTS = BENCHMARKS / "results"


def parser(description: str) -> argparse.ArgumentParser:
  """An argument parser with the options every paper script has."""
  p = argparse.ArgumentParser(description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true",
                 help="a small configuration that runs in well under 2 minutes (smoke test)")
  p.add_argument("--out-dir", type=pathlib.Path, default=RESULTS,
                 help="where the JSON and PNG go (default benchmarks/results)")
  p.add_argument("--no-plot", action="store_true", help="skip the PNG")
  return p


def add_data_dir(p: argparse.ArgumentParser) -> None:
  p.add_argument("--data-dir", type=pathlib.Path, default=None,
                 help=f"directory of MNIST-format IDX files (default ${DATA_DIR_ENV} "
                      f"or {DEFAULT_DATA_DIR})")


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


class Timer:
  """Wall time since construction, in seconds."""

  def __init__(self):
    self.start = time.perf_counter()

  def __call__(self) -> float:
    return time.perf_counter() - self.start


def command() -> str:
  """The command line that ran this script, relative to the repository root."""
  script = pathlib.Path(sys.argv[0]).resolve()
  try:
    script = script.relative_to(BENCHMARKS.parent)
  except ValueError:
    pass
  return " ".join(["python", str(script), *sys.argv[1:]])


def paths(out_dir: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
  """``(json, png)`` paths of result ``name`` under ``out_dir``."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  return out_dir / f"paper_{name}.json", out_dir / f"paper_{name}.png"


def write(path: pathlib.Path, record: dict) -> None:
  """Writes the record with the command and the machine (NumPy values become lists)."""
  _common.write_json(path, _common.jsonable({"command": command(), **record}))


def pyplot():
  """matplotlib.pyplot with a non-interactive backend (pip install amc_jax[bench])."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt
