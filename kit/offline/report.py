"""An evaluation's report: ``report.md`` with tables and PNG plots, its JSON, and rich tables on a console."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from rich.table import Table

from kit.offline.evaluate import Evaluation

if TYPE_CHECKING:
    from rich.console import Console


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_budget_curve(ev: Evaluation, path: Path) -> Path:
    """pass@1 and maj@n against the token budget, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for run in ev.runs:
        c = ev.curve.filter(pl.col("run") == run.name)
        for ax, col in zip(axes, ("pass@1", "maj@n"), strict=True):
            ax.plot(c["budget"], c[col], marker="o", label=run.name)
    for ax, title in zip(axes, ("pass@1 (mean over samples)", "maj@n (vote of all samples)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ev.budgets, [f"{b / 1000:g}k" for b in ev.budgets])
        ax.minorticks_off()
        ax.set_xlabel("token budget per sample")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lengths(ev: Evaluation, path: Path) -> Path:
    """Token-count histograms of correct, wrong and unanswered finished samples (scored problems), per run."""
    plt = _pyplot()
    n = len(ev.runs)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.8 * n), squeeze=False)
    for ax, run in zip(axes[:, 0], ev.runs, strict=True):
        s = ev.samples.filter((pl.col("run") == run.name) & pl.col("scored"))
        groups = {"correct": s.filter(pl.col("correct")), "wrong answer": s.filter(
            ~pl.col("correct") & pl.col("answer").is_not_null()), "no answer": s.filter(pl.col("answer").is_null())}
        lengths = {k: g["tokens"].to_list() for k, g in groups.items()}
        longest = max((max(v) for v in lengths.values() if v), default=0)
        if longest:
            ax.hist(list(lengths.values()), bins=np.linspace(0, longest, 31),
                    label=[f"{k} ({len(v)})" for k, v in lengths.items()],
                    color=["tab:green", "tab:red", "tab:gray"], alpha=0.8)
        ax.set_title(f"{run.name}: tokens per sample")
        ax.set_xlabel("tokens")
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_time(ev: Evaluation, path: Path) -> Path | None:
    """Seconds per problem of each records run, in run order, coloured by the selected answer's verdict."""
    runs = [r for r in ev.runs if r.kind == "records"]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.8 * len(runs)), squeeze=False)
    colours = {True: "tab:green", False: "tab:red", None: "tab:gray"}
    for ax, run in zip(axes[:, 0], runs, strict=True):
        t = ev.problems.filter(pl.col("run") == run.name)
        secs = [s or 0.0 for s in t["seconds"].to_list()]
        ax.bar(range(len(secs)), secs, color=[colours[v] for v in t["selected_correct"].to_list()])
        ax.set_title(f"{run.name}: seconds per problem (green right, red wrong, grey unscored)")
        ax.set_xlabel("problem (run order)")
        ax.set_ylabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path




# --- report ------------------------------------------------------------------------------------------


def _markdown(df: pl.DataFrame) -> str:
    if df.is_empty():
        return "(none)"
    df = df.with_columns(pl.col(pl.String).str.replace_all("|", "\\|", literal=True))
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=120, float_precision=3, tbl_width_chars=65_535):
        return str(df)


def side_by_side(summary: pl.DataFrame) -> pl.DataFrame:
    """The summary transposed: one row per metric, one column per run."""
    shown = summary.drop("kind").with_columns(
        pl.col(pl.Float64).round(3)).with_columns(pl.exclude("run").cast(pl.String).fill_null("–"))
    return shown.transpose(include_header=True, header_name="metric", column_names="run")


def write_report(ev: Evaluation, out: Path, *, max_problem_rows: int = 100) -> dict[str, Path]:
    """``report.md`` with tables and the PNG plots next to it; returns the written files."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"budget_curve": plot_budget_curve(ev, out / "budget_curve.png"),
             "lengths": plot_lengths(ev, out / "lengths.png")}
    time_png = plot_time(ev, out / "time_per_problem.png")
    if time_png is not None:
        files["time_per_problem"] = time_png
    runs = pl.DataFrame([{"run": r.name, "kind": r.kind, "source": r.source, "model": r.model or "–",
                          "profile": r.profile.name, "tokenizer": r.tokenizer.name if r.tokenizer else "–",
                          "recount ratio": "–" if r.recount_ratio is None else f"{r.recount_ratio:.3f}",
                          "notes": "; ".join(r.notes) or "–"} for r in ev.runs])
    parts = [
        "# Evaluation report", "",
        f"`python -m kit evaluate`, {len(ev.runs)} run(s), {ev.seconds:.1f} s. Metric definitions: "
        "docs/evaluation.md. Accuracy metrics average the scored problems (integer gold); sample metrics use "
        "finished samples only.", "",
        "## Runs", "", _markdown(runs), "",
        "## Metrics side by side", "", _markdown(side_by_side(ev.summary)), "",
        "## Budget curve", "",
        "Each sample cut at B tokens and its answer re-extracted (no re-generation).", "",
        "![budget curve](budget_curve.png)", "",
        _markdown(ev.curve.with_columns(pl.col(pl.Float64).round(3))), "",
        "## Answer selection", "",
        "Strategies of kit.offline.selection on the finished samples of each scored problem; 95 % bootstrap CI "
        "over problems.", "",
        _markdown(ev.strategies.with_columns(pl.col(pl.Float64).round(3))), "",
        "## What finishing first says", "",
        "First-finish accuracy (the first attempt to finish: by finish time when recorded, else the shortest) "
        "against a random attempt (mean pass@1), their difference with a paired 95 % bootstrap CI over problems, "
        "and the median length of wrong attempts over right ones. A rule that trusts early finishers (a "
        "first-finish quorum, ties to the earliest) is for models where the difference is clearly above 0 "
        "(docs/evaluation.md).", "",
        _markdown(_rounded(ev.finish)) if not ev.finish.is_empty() else "(no scored problem with two attempts)", "",
        "## Lengths of correct and wrong samples", "", "![lengths](lengths.png)", "",
    ]
    if time_png is not None:
        parts += ["## Time per problem", "", "![time per problem](time_per_problem.png)", ""]
    parts += ["## Per problem", ""]
    if len(ev.runs) > 1:
        wide = ev.problems.pivot(on="run", index="problem_id", values="pass@1")
        parts += ["pass@1 side by side:", "", _markdown(wide.head(max_problem_rows).with_columns(
            pl.col(pl.Float64).round(3))), ""]
    cols = ["problem_id", "gold", "selected", "selected_correct", "samples", "correct", "pass@1",
            f"maj@{ev.ks[-1]}" if ev.ks else "pass@1", "no_answer", "tokens", "seconds", "reason"]
    for run in ev.runs:
        t = ev.problems.filter(pl.col("run") == run.name).select(list(dict.fromkeys(cols))).with_columns(
            pl.col(pl.Float64).round(3))
        more = f" (first {max_problem_rows} of {t.height}; all in the JSON)" if t.height > max_problem_rows else ""
        parts += [f"### {run.name}{more}", "", _markdown(t.head(max_problem_rows)), ""]
    report = out / "report.md"
    report.write_text("\n".join(parts), encoding="utf-8")
    files["report"] = report
    return files


def _rounded(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(pl.Float64).round(3))


def write_json(ev: Evaluation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ev.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def _rich_table(df: pl.DataFrame, title: str):

    table = Table(title=title)
    for col in df.columns:
        table.add_column(col, justify="right" if df[col].dtype.is_numeric() else "left")
    for row in df.iter_rows():
        table.add_row(*("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    return table


def print_summary(ev: Evaluation, console: Console) -> None:
    """The side-by-side metrics and the strategy table as rich tables."""
    console.print(_rich_table(side_by_side(ev.summary), "evaluation"))
    if not ev.strategies.is_empty():
        console.print(_rich_table(ev.strategies, "answer selection (95 % bootstrap CI)"))
    if not ev.finish.is_empty():
        cols = ["run", "problems", "first_finish", "random", "difference", "diff_low", "diff_high", "length_ratio",
                "verdict"]
        console.print(_rich_table(ev.finish.select(cols), "what finishing first says (95 % bootstrap CI)"))
