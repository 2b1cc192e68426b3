"""Every notebook in notebooks/ runs from top to bottom without error.

The code cells of each notebook are concatenated into one script and run in a
fresh Python process, so that the notebook's JAX configuration (x64, XLA flags)
cannot leak into this test session, nor this session's into the notebook. The
process gets the same strictness as the tests: warnings are errors, and JAX's
dtype and rank promotion are strict.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def _script(path: pathlib.Path) -> str:
  notebook = json.loads(path.read_text(encoding="utf-8"))
  assert notebook["nbformat"] == 4
  cells = []
  for cell in notebook["cells"]:
    if cell["cell_type"] != "code":
      continue
    # Notebooks are kept without outputs (see the style guide).
    assert cell.get("outputs", []) == [] and cell.get("execution_count") is None
    source = cell["source"]
    source = "".join(source) if isinstance(source, list) else source
    # IPython magics and shell escapes are not Python.
    lines = [
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    ]
    cells.append("\n".join(lines))
  return "\n\n".join(cells) + "\n"


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
  script = tmp_path / (path.stem + ".py")
  script.write_text(_script(path), encoding="utf-8")
  env = dict(os.environ)
  env["JAX_NUMPY_DTYPE_PROMOTION"] = "strict"
  env["JAX_NUMPY_RANK_PROMOTION"] = "raise"
  env["MPLBACKEND"] = "Agg"  # in case a notebook ever plots
  proc = subprocess.run(
      [sys.executable, "-W", "error", str(script)],
      cwd=path.parent,
      capture_output=True,
      text=True,
      env=env,
      timeout=600,
  )
  assert proc.returncode == 0, (
      f"{path.name} failed:\n--- stdout ---\n{proc.stdout[-4000:]}"
      f"\n--- stderr ---\n{proc.stderr[-4000:]}"
  )
