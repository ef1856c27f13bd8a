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
    "01_curate.ipynb": {"config": "training/configs/curate.yaml", "overrides": [],
                        "out": "{runs}/curate"},
    "02_sft.ipynb": {"config": "training/configs/sft_tiny.yaml", "overrides": ["--data", "{runs}/curate/sft.jsonl"],
                     "out": "{runs}/sft"},
    "03_grpo.ipynb": {"config": "training/configs/grpo_tiny.yaml",
                      "overrides": ["--model", "{runs}/sft", "--data", "{runs}/curate/rl.jsonl"], "out": "{runs}/grpo"},
    "04_distill_merge.ipynb": {"config": "training/configs/distill_tiny.yaml",
                               "overrides": ["--model", "{runs}/grpo", "--data", "{runs}/curate/sft.jsonl"],
                               "out": "{runs}/distill-merge"},
    "05_quantize.ipynb": {"config": "training/configs/quantize_tiny.yaml",
                          "overrides": ["--model", "{runs}/distill-merge/merged"], "out": "{runs}/quantize"},
    "06_evaluate.ipynb": {"pools": ["skythought_aime24"], "out": "{runs}/evaluate"},
    "07_loop.ipynb": {"out": "{runs}/loop", "samples": 2, "max_tokens": 64},
}
"""Tiny parameters per notebook, in pipeline order: each notebook reads what the previous ones wrote
(``{runs}`` is a temporary folder), as a user runs them: curate → SFT → GRPO → distil/merge → quantise."""

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


def _fill(value, runs: Path):
    if isinstance(value, str):
        return value.replace("{runs}", str(runs))
    if isinstance(value, list):
        return [_fill(v, runs) for v in value]
    return value


@pytest.mark.slow
def test_notebooks_execute_as_a_pipeline(tmp_path: Path) -> None:
    import papermill

    runs = tmp_path / "runs"
    for name in sorted(TINY_PARAMS):
        params = {k: _fill(v, runs) for k, v in TINY_PARAMS[name].items()}
        out_nb = tmp_path / name
        try:
            papermill.execute_notebook(str(NOTEBOOKS / name), str(out_nb), parameters=params, cwd=str(ROOT),
                                       kernel_name="python3", progress_bar=False)
        except papermill.PapermillExecutionError as exc:
            pytest.fail(f"{name} failed in cell {exc.cell_index}: {exc.ename}: {exc.evalue}")
        nb = nbformat.read(out_nb, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, name
        out = Path(params["out"])
        assert out.is_dir() and any(out.iterdir()), f"{name}: wrote nothing to its out folder {out}"
    # what each step promises the next: data, trained models, a quantised checkpoint, a report
    assert (runs / "curate" / "sft.jsonl").stat().st_size > 0 and (runs / "curate" / "rl.jsonl").stat().st_size > 0
    for model in ("sft", "grpo", "distill-merge/merged", "quantize"):
        assert (runs / model / "config.json").is_file(), model
    assert "quantization_config" in (runs / "quantize" / "config.json").read_text()
    assert (runs / "evaluate" / "report.md").is_file() and (runs / "evaluate" / "budget_curve.png").is_file()
    # the loop: the trained model's own attempts, read back by evaluate and simulate
    loop = runs / "loop"
    assert (loop / "gen1" / "records.jsonl").is_file() and (loop / "grpo" / "config.json").is_file()
    assert "gen1" in (loop / "evaluate" / "report.md").read_text() and (loop / "simulate.png").is_file()
