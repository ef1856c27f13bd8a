"""Every notebook in notebooks/ executes headless with tiny parameters and is committed without outputs.

Why: notebooks are how users drive the pipeline; one that breaks after an API change is found here,
not by a user an hour into a GPU session. Parameters are injected the way users do it (papermill's
``parameters`` cell); the kernel runs in the repository root so relative config paths resolve.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

TINY_PARAMS: dict[str, dict] = {
    "01_curate.ipynb": {"config": "training/configs/curate.yaml", "overrides": ["extra_eval_sets=[]"]},
}
"""Tiny parameters per notebook (``out`` is added per test, under tmp_path)."""


def test_every_notebook_is_covered_and_clean() -> None:
    found = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert found, "no notebooks found"
    assert sorted(TINY_PARAMS) == found, "each notebook needs tiny parameters here (and nothing stale)"
    for name in found:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name}: committed with outputs"
        assert len(nb.cells) <= 12, f"{name}: notebooks stay thin (logic belongs in kit/ or training/)"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY_PARAMS))
def test_notebook_executes(name: str, tmp_path: Path) -> None:
    import papermill

    params = {**TINY_PARAMS[name], "out": str(tmp_path / "out")}
    out_nb = tmp_path / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out_nb), parameters=params, cwd=str(ROOT),
                               kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out_nb, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert (tmp_path / "out").exists(), f"{name}: wrote nothing to its out folder"
