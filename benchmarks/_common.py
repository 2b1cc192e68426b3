"""What every benchmark script shares: the harness (command line, prologue,
record / write / print ending), the machine record and the JSON output.

A script's ``main`` is, in outline::

  p = _common.parser(__doc__.split("\n")[0], xla_workaround=True)  # + its own flags
  args = p.parse_args(argv)
  run = _common.start(args)        # load average, --quick compile, XLA:CPU workaround
  ...                              # the measurement
  _common.finish(json_path, record, text, run())  # write with command + machine, print
"""

import argparse
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
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
# Where a run writes unless told otherwise: git-ignored, so that rerunning a
# script never overwrites a committed result. Commit a result deliberately
# with --out-dir benchmarks/results.
OUT = BENCHMARKS / "out"


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


# ---------------------------------------------------------------------------
# The harness: command line, prologue, ending.
# ---------------------------------------------------------------------------

QUICK_HELP = "a small configuration that runs in well under 2 minutes (smoke test)"
OUT_DIR_HELP = ("where the JSON and PNG go (default benchmarks/out, git-ignored;"
                " --out-dir benchmarks/results replaces the committed result)")
NO_XLA_WORKAROUND_HELP = "skip amc_jax.use_xla_cpu_workaround()"


def parser(description: str, *, quick: "str | None" = QUICK_HELP, out_dir: bool = True,
           no_plot: "str | None" = "skip the PNG",
           xla_workaround: "str | None" = None, resumable: bool = False) -> argparse.ArgumentParser:
  """An argument parser with the options the scripts share.

  ``--quick`` (help ``quick``; None: no such flag), ``--out-dir`` (default
  benchmarks/out), ``--no-plot`` (help ``no_plot``; None: no flag), with
  ``xla_workaround`` (its help) ``--no-xla-workaround``, and with
  ``resumable`` ``--fresh`` (ignore what an earlier run checkpointed) and
  ``--plot-from`` (:func:`replot`). A script adds its own.
  """
  p = argparse.ArgumentParser(description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  if quick is not None:
    p.add_argument("--quick", action="store_true", help=quick)
  if out_dir:
    p.add_argument("--out-dir", type=pathlib.Path, default=OUT, help=OUT_DIR_HELP)
  if no_plot is not None:
    p.add_argument("--no-plot", action="store_true", help=no_plot)
  if xla_workaround is not None:
    p.add_argument("--no-xla-workaround", action="store_true", help=xla_workaround)
  if resumable:
    p.add_argument("--fresh", action="store_true",
                   help="ignore groups checkpointed by an earlier run in --out-dir")
    p.add_argument("--plot-from", type=pathlib.Path, default=None,
                   help="only redraw the plot of this JSON (as the same name with .png)")
  return p


class Timer:
  """Wall time since construction, in seconds."""

  def __init__(self):
    self.start = time.perf_counter()

  def __call__(self) -> float:
    return time.perf_counter() - self.start


def load_average() -> "list | None":
  """The 1, 5 and 15 minute load averages (None where the OS has none)."""
  return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


class Run(Timer):
  """What :func:`start` did: a wall clock, the load average and the workaround."""

  def __init__(self, load_start, workaround):
    super().__init__()
    self.load_start, self.workaround = load_start, workaround


def start(args: "argparse.Namespace | None" = None, *, quick: "bool | None" = None,
          workaround: "bool | None" = None) -> Run:
  """The prologue of ``main``, before the first computation.

  Reads the load average; with ``--quick`` turns XLA:CPU's backend
  optimisation off (:func:`quick_compile`); unless ``--no-xla-workaround``,
  calls ``amc_jax.use_xla_cpu_workaround()`` (its result is
  ``Run.workaround``: True where it applied, False when skipped). ``quick`` and
  ``workaround`` override what ``args`` says.
  """
  load = load_average()
  if quick is None:
    quick = bool(getattr(args, "quick", False))
  if workaround is None:
    workaround = not getattr(args, "no_xla_workaround", False)
  if quick:
    quick_compile()  # XLA reads XLA_FLAGS once, when JAX starts
  applied = False
  if workaround:
    import amc_jax  # pylint: disable=import-outside-toplevel
    applied = amc_jax.use_xla_cpu_workaround()
  return Run(load, applied)


def paths(out_dir, name: str, prefix: str = "") -> tuple[pathlib.Path, pathlib.Path]:
  """``(json, png)`` paths of result ``<prefix><name>`` under ``out_dir`` (created)."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  return out_dir / f"{prefix}{name}.json", out_dir / f"{prefix}{name}.png"


def record(path, rec: dict) -> None:
  """Writes ``rec`` with the command first and the machine last (arrays become lists)."""
  write_json(path, jsonable({"command": command(), **rec}))


def finish(path, rec: dict, text: "str | None" = None, wall: "float | None" = None, *,
           add: bool = False) -> dict:
  """The ending of ``main``: :func:`record` to ``path``, print ``text`` and the wall time.

  With ``add``, the record ends with ``"verdict": text`` and ``"wall_s": wall``.
  """
  if add:
    rec = {**rec, "verdict": text, "wall_s": wall}
  record(path, rec)
  if text is not None:
    print(text)
  if wall is not None:
    print(f"wall {wall:.1f} s")
  return rec


def save_figure(fig, path, dpi: int = 110) -> None:
  """Lays out, writes and closes a matplotlib figure; says where it went."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  print(f"wrote {path}")


def write_and_plot(out_dir, name: str, record: dict, plot, no_plot: bool) -> pathlib.Path:
  """Writes ``record`` to ``out_dir/name.json`` and, unless ``no_plot``, draws
  ``plot(the record as read back, out_dir/name.png)``; returns the JSON's path."""
  json_path = pathlib.Path(out_dir) / f"{name}.json"
  write_json(json_path, jsonable(record))
  if not no_plot:
    plot(json.loads(json_path.read_text()), json_path.with_suffix(".png"))
  return json_path


def replot(plot_from, plot) -> bool:
  """``--plot-from FILE.json``: redraws ``plot(record, FILE.png)`` and returns True; else False."""
  if plot_from is None:
    return False
  plot_from = pathlib.Path(plot_from)
  plot(json.loads(plot_from.read_text()), plot_from.with_suffix(".png"))
  return True


def value_at(costs, values, budget: float):
  """``(value, ended_early)``: ``values`` at the last checkpoint whose cost
  (``costs``, increasing) is within ``budget``, and whether the run ended
  before the budget (its final value then stands for it); ``(None, False)``
  when the first checkpoint already costs more. The cell of a per-budget
  "who is ahead" table."""
  within = [i for i, c in enumerate(costs) if c <= budget]
  if not within:
    return None, False
  i = within[-1]
  return values[i], i == len(costs) - 1 and costs[-1] < budget


def medians_at(groups: dict, budget: float, cost, value) -> tuple[dict, dict]:
  """The cells of one budget's row of a "who is ahead" table: per group (a
  name and its runs), the median over its runs of :func:`value_at`
  (``cost(run)``, ``value(run)``; None where no run has a checkpoint within
  the budget), and whether any of those runs ended before the budget."""
  medians, ended_early = {}, {}
  for name, runs in groups.items():
    found = [value_at(cost(r), value(r), budget) for r in runs]
    values = [v for v, _ in found if v is not None]
    medians[name] = statistics.median(values) if values else None
    ended_early[name] = any(e for v, e in found if v is not None)
  return medians, ended_early


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
