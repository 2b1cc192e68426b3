"""The command line the examples share."""

import argparse


def parser(module: str, doc: str, steps: int) -> argparse.ArgumentParser:
  """``python -m module``'s parser, described by the first line of ``doc``,
  with ``--steps`` (default ``steps``)."""
  p = argparse.ArgumentParser(
      prog=f"python -m {module}",
      description=doc.splitlines()[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  p.add_argument("--steps", type=int, default=steps)
  return p
