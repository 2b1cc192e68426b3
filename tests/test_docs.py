"""The Sphinx site builds with warnings as errors, and documents every public name.

A broken docstring (bad reStructuredText, a malformed Args section), a
notebook that does not parse or a README section that does not render fails
here. The build runs in a subprocess into a temporary folder; the notebooks
are rendered as stored, not executed (tests/test_notebooks.py executes them).
"""

import pathlib
import subprocess
import sys

import amc_jax
from amc_jax import proposals

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

def test_api_page_lists_every_public_name():
  api = (DOCS / "api.rst").read_text(encoding="utf-8")
  documented = set()
  for line in api.splitlines():
    if line.startswith(".. auto") and "::" in line:
      documented.add(line.split("::", 1)[1].strip().split(".")[-1])
  names = (set(amc_jax.__all__) - {"proposals"}) | set(proposals.__all__)
  assert sorted(names - documented) == []


def test_sphinx_build_has_no_warnings(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
       "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
      capture_output=True, text=True, timeout=600, cwd=ROOT,
  )
  assert proc.returncode == 0, proc.stderr[-6000:] + proc.stdout[-2000:]
  html = tmp_path / "html"
  assert (html / "api.html").exists()
  assert len(list((html / "_generated" / "notebooks").glob("*.html"))) == len(
      list((ROOT / "notebooks").glob("*.ipynb")))
  api = (html / "api.html").read_text(encoding="utf-8")
  assert "amc_jax.amc" in api and "amc_jax.proposals.discrete" in api
