"""Compatibility module: evaluation is split over :mod:`kit.offline` now (docs/architecture.md: layers) —
``runs`` (data model and reader), ``tokenizers``, ``metrics``, ``budget``, ``selection``, ``evaluate``,
``report``. The old names keep working."""

from kit.offline.budget import DEFAULT_BUDGETS, budget_curve
from kit.offline.evaluate import Evaluation, evaluate
from kit.offline.metrics import default_ks, maj_at_k, pass_at_k, problem_table, run_summary
from kit.offline.metrics import finished_samples_frame as samples_frame
from kit.offline.report import (
    plot_budget_curve,
    plot_lengths,
    plot_time,
    print_summary,
    side_by_side,
    write_json,
    write_report,
)
from kit.offline.runs import (
    RECOUNT_TOLERANCE,
    EvalProblem,
    EvalSample,
    Run,
    answer_of,
    load_pool_run,
    load_records_run,
    load_runs,
    tokenizer_for_records,
    verify_token_counts,
)
from kit.offline.selection import selection_problems, strategies_table
from kit.offline.tokenizers import ApproxSplitter, HFSplitter, TokenSplitter, resolve_tokenizer

__all__ = [
    "DEFAULT_BUDGETS", "RECOUNT_TOLERANCE", "ApproxSplitter", "EvalProblem", "EvalSample", "Evaluation",
    "HFSplitter", "Run", "TokenSplitter", "answer_of", "budget_curve", "default_ks", "evaluate", "load_pool_run",
    "load_records_run", "load_runs", "maj_at_k", "pass_at_k", "plot_budget_curve", "plot_lengths", "plot_time",
    "print_summary", "problem_table", "resolve_tokenizer", "run_summary", "samples_frame", "selection_problems",
    "side_by_side", "strategies_table", "tokenizer_for_records", "verify_token_counts", "write_json",
    "write_report",
]
