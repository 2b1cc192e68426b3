"""The README's code runs, and CI runs the README's test command."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
  commands = [l for l in README.splitlines() if l.startswith("python3 -m venv")]
  test_commands = [c for c in commands if "pytest" in c]
  assert len(commands) == 2 and len(test_commands) == 1
  ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
  assert test_commands[0] in ci_lines


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_blocks_run(index):
  """Each block runs as a user would run it: a fresh interpreter."""
  assert len(PYTHON_BLOCKS) >= 3
  result = subprocess.run(
      [sys.executable, "-c", PYTHON_BLOCKS[index]],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
  )
  assert result.returncode == 0, result.stderr[-3000:]
