"""Sphinx configuration: the API reference, the notebooks and the README's sections.

The notebooks are rendered as stored (outputs stripped in git, so the pages
show the code and the text; ``nb_execution_mode = "off"``: the test suite
executes them, the docs build does not). The README stays the one source of
the user guide: each of its ``##`` sections becomes a page under
``_generated/`` when the build starts, and the notebooks are copied there.
"""

import os
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GENERATED = pathlib.Path(__file__).resolve().parent / "_generated"

project = "amc_jax"
author = "amc_jax developers"
copyright = "2026, amc_jax developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath"]
autodoc_typehints = "none"  # the docstrings say what the arguments are
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # NamedTuple "Attributes:" as fields, not as duplicate objects
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = "amc_jax"
suppress_warnings = ["myst.header"]


def _slug(title: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def _rewrite(markdown: str) -> str:
  """Markdown of a README section as a page of the docs."""
  out, fenced = [], False
  for line in markdown.splitlines():
    if line.startswith("```"):
      fenced = not fenced
    elif not fenced:
      if line.startswith("##"):
        line = line[1:]  # "## Usage" is the page's title
      # Images committed under docs/: a leading "/" is the docs folder.
      line = re.sub(r"!\[([^\]]*)\]\(docs/([^)]+)\)", r"![\1](/\2)", line)
      # Links into the repository or to README anchors have no page here:
      # keep their text and name the file.
      line = re.sub(r"(?<!!)\[([^\]]+)\]\((?!https?:)([^)]+)\)",
                    lambda m: m.group(1) if m.group(2).startswith("#") else f"{m.group(1)} (`{m.group(2)}`)",
                    line)
    out.append(line)
  return "\n".join(out) + "\n"


def _generate() -> None:
  if GENERATED.exists():
    shutil.rmtree(GENERATED)
  (GENERATED / "guide").mkdir(parents=True)
  (GENERATED / "notebooks").mkdir()
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  parts = re.split(r"^(## .*)$", readme, flags=re.M)
  intro = parts[0].split("\n", 1)[1]  # without the "# amc_jax" title
  (GENERATED / "intro.md").write_text(_rewrite(intro), encoding="utf-8")
  for i, (title, body) in enumerate(zip(parts[1::2], parts[2::2])):
    name = f"{i:02d}_{_slug(title[3:])}.md"
    (GENERATED / "guide" / name).write_text(_rewrite(title + "\n" + body), encoding="utf-8")
  for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    shutil.copy(notebook, GENERATED / "notebooks" / notebook.name)


_generate()
