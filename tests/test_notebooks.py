"""Every notebook in notebooks/ runs from top to bottom and checks its result.

Each notebook's last code cell asserts the notebook's key result (a loss
reached, a distribution matched), so a wrong algorithm fails here, not only a
crash. Notebooks are numbered (``NN_name.ipynb``) and kept small: together
they run in a few minutes on two CPU cores.

The code cells of each notebook are concatenated into one script and run in a
fresh Python process, so that the notebook's JAX configuration (x64, XLA flags)
cannot leak into this test session, nor this session's into the notebook. The
process gets most of the tests' strictness: warnings are errors and JAX's rank
promotion raises (dtype promotion stays JAX's default, see below).
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


def _code_cells(path: pathlib.Path) -> list[str]:
  notebook = json.loads(path.read_text(encoding="utf-8"))
  return [
      "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
      for c in notebook["cells"] if c["cell_type"] == "code"
  ]


def test_there_are_notebooks():
  assert NOTEBOOKS
  numbers = [int(p.name.split("_", 1)[0]) for p in NOTEBOOKS]
  assert numbers == list(range(1, len(NOTEBOOKS) + 1)), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_ends_by_checking_its_result(path):
  last = _code_cells(path)[-1]
  assert "assert " in last, f"{path.name}: the last code cell should assert the key result"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
  script = tmp_path / (path.stem + ".py")
  script.write_text(_script(path), encoding="utf-8")
  env = dict(os.environ)
  # JAX's default dtype promotion, as a user has it: the notebooks put
  # optax.adam beside aMC, and its bias correction (a Python float ** an int32
  # count) fails under strict promotion (tests/test_fit.py works around the
  # same). The library itself is tested under strict promotion elsewhere.
  env["JAX_NUMPY_DTYPE_PROMOTION"] = "standard"
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
