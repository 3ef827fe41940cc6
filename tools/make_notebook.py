"""Write a notebook from a plain-Python cell list (cells separated by lines `# %%`, markdown cells
start with `# %% [markdown]`). Keeps notebooks reviewable as .py sources under notebooks/src/.

Usage: python tools/make_notebook.py notebooks/src/00_configs.py notebooks/00_configs.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def build(src: Path, dst: Path) -> None:
    text = src.read_text()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    chunks = text.split("# %%")
    for chunk in chunks[1:]:
        header, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if header.strip() == "[markdown]":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines()]
            nb.cells.append(nbformat.v4.new_markdown_cell("\n".join(lines)))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(body))
    for i, cell in enumerate(nb.cells):
        cell["id"] = str(i)  # the ids nbstripout writes, so --verify passes
    dst.write_text(nbformat.writes(nb) + "\n")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
