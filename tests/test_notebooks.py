"""The notebooks run top to bottom in a fresh kernel of this venv, and are stored without outputs.

Each notebook is executed by nbclient in a new ``python3`` kernel: jupyter_client starts a
kernelspec whose command is ``python`` with ``sys.executable``, so the kernel runs this
venv's interpreter (an extra probe cell checks it). Cells are found by their tags
(``metadata.tags``), so prose can change without breaking the test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ("explore.ipynb", "marbles.ipynb")
CELL_TIMEOUT = 30  # seconds per cell; the slowest cell (the workload) takes about 4
PROBE = "import sys\nprint(sys.prefix)"


def _read(path: Path) -> NotebookNode:
    nb: NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return nb


def _stored() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _tagged(nb: NotebookNode, tag: str) -> NotebookNode:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    cell: NotebookNode = cells[0]
    return cell


def _data(cell: NotebookNode, mime: str) -> list[Any]:
    return [
        o["data"][mime]
        for o in cell.outputs
        if o.output_type in ("execute_result", "display_data") and mime in o["data"]
    ]


def _stdout(cell: NotebookNode) -> str:
    return "".join(
        o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )


async def _execute(name: str, workdir: Path) -> NotebookNode:
    nb = _read(NOTEBOOKS / name)
    probe = nbformat.v4.new_code_cell(PROBE, metadata={"tags": ["probe"]})  # type: ignore[no-untyped-call]
    nb.cells.append(probe)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    # allow_errors=False: a failing cell (an assert in a marble test included) raises
    # CellExecutionError here, naming the cell.
    await client.async_execute()
    assert _stdout(_tagged(nb, "probe")).strip() == sys.prefix
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error"
            assert "Traceback" not in output.get("text", "")
    return nb


def test_the_expected_notebooks_are_there() -> None:
    assert {p.name for p in _stored()} >= set(EXPECTED)


@pytest.mark.parametrize("path", _stored(), ids=lambda p: p.name)
def test_stored_without_outputs(path: Path) -> None:
    nb = _read(path)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], f"cell {cell.get('id')} has outputs"
        assert cell.execution_count is None, f"cell {cell.get('id')} has an execution count"
        assert "execution" not in cell.metadata, f"cell {cell.get('id')} has execution times"
    assert nb.metadata.kernelspec.name == "python3"


async def test_explore_runs(tmp_path: Path) -> None:
    nb = await _execute("explore.ipynb", tmp_path)

    assert "http://127.0.0.1:" in _stdout(_tagged(nb, "server"))
    # querysync logs warnings (failed fetches, rejected frames) to stderr when no handler
    # is set up, as in a fresh kernel: a clean run logs none.
    stderr = [o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert stderr == []

    lines = _stdout(_tagged(nb, "live-stream")).splitlines()
    assert len(lines) == 12
    assert all(line.split()[0] in ("created", "updated", "deleted") for line in lines)

    assert _data(_tagged(nb, "timeline"), "image/png")

    (cache,) = _data(_tagged(nb, "cache"), "text/html")
    assert "<table" in cache
    assert "<th>etag</th>" in cache
    assert "<th>age</th>" in cache
    assert "[&quot;workflows&quot;]" in cache

    (events,) = _data(_tagged(nb, "events"), "text/html")
    assert "<table" in events
    assert "fetched" in events

    (counters,) = _data(_tagged(nb, "counters"), "text/html")
    assert "<table" in counters
    assert "coalesced" in counters
    assert "frames" in counters


async def test_marbles_runs(tmp_path: Path) -> None:
    nb = await _execute("marbles.ipynb", tmp_path)

    (rejected,) = _data(_tagged(nb, "pipeline-test"), "text/plain")
    assert rejected.startswith("Rejected(")

    (png,) = _data(_tagged(nb, "marble-plot"), "image/png")
    assert png
