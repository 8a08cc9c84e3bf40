"""Every notebook under notebooks/ runs top to bottom on the default model (executable docs)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.fast
def test_the_five_tours_exist():
    assert [p.stem.split("-", 1)[1] for p in NOTEBOOKS] == ["tour", "locate", "edit-and-verify",
                                                            "memorisation-signature", "export"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert all(c.get("outputs") for c in nb.cells if c.cell_type == "code" and not c.source.startswith("import os"))
