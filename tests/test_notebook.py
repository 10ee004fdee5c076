"""notebooks/data_preparation.ipynb: stored without outputs, and runs top to bottom."""

import nbformat
import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "data_preparation.ipynb"


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.skipif(
    not (REPO.parent / "shared" / "real").is_dir(),
    reason="../shared/real is not beside the checkout",
)
def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    text = "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "1101" in text and "Your plan quota for the month is exhausted." in text
    assert "rate_change_percent" in text and "good lines, 0 bad" in text
