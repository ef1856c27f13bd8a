"""Draw the pictures of docs/architecture.md from their sources: the layer graph from the code's own
imports (:mod:`kit.layers`), the two data flows from the node and edge lists below.

    .venv/bin/python scripts/draw_architecture.py [--out docs/img]

Re-run it after moving modules between layers or changing a flow: ``tests/test_docs.py`` checks that the
committed picture's layers (modules per layer, which layers import which; written beside it as
``architecture.json``) match the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kit.layers import LAYERS, import_graph, layer_edges, layer_of, module_files  # noqa: E402

LAYER_TEXT = {
    "runtime": "profiles, answers, voting, sandbox, TIR formats,\nengines (vLLM), solver, time bank + throughput,\n"
               "session loop, predict, local gateway, dry-run",
    "offline": "run model + the one reader (records, traces),\ntokenizers, metrics, budget curve,\nselection, reports",
    "sim": "virtual clock, replay engine,\ncompetition simulator",
    "learn": "curation, rewards, scorer,\ndifficulty targets + training",
    "app": "python -m kit (dryrun, simulate,\nevaluate): wires the layers",
}

PREDICT_FLOW = {
    "nodes": {
        "gateway": (0.5, 9.0, "Kaggle gateway\n(one row at a time)"),
        "predict": (0.5, 7.6, "predict  (kit.runtime.kaggle)\nparse call, wait ≤ deadline + margin"),
        "plan": (0.5, 6.2, "Session.plan  (time bank)\ndeadline, samples, tokens, rules"),
        "solve": (0.5, 4.8, "Solver.solve\nprompts → samples → ballot"),
        "engine": (-2.6, 3.1, "Engine (vLLM AsyncLLM)\nstream, abort"),
        "sandbox": (0.5, 3.1, "Sandbox session\n(per sample, TIR)"),
        "ballot": (3.6, 3.1, "Ballot  (voting)\nstop? which answer?"),
        "records": (3.6, 7.6, "records.jsonl\nbudget, sample, problem"),
        "bank": (-2.6, 6.2, "TimeBank.record\nthroughput learns"),
        "frame": (-2.6, 9.0, "pl.DataFrame\n{id, answer}"),
    },
    "edges": [("gateway", "predict"), ("predict", "plan"), ("plan", "solve"), ("solve", "engine"),
              ("solve", "sandbox"), ("solve", "ballot"), ("solve", "records"), ("solve", "bank"),
              ("bank", "predict"), ("predict", "frame"), ("frame", "gateway")],
}

OFFLINE_FLOW = {
    "nodes": {
        "records": (-2.8, 8.6, "records.jsonl\n(dry-run, predict)"),
        "traces": (2.8, 8.6, "trace pools\n(SkyThought, ToRA, NeMo-Skills)"),
        "runs": (0.0, 6.9, "kit.offline.runs\nthe one reader → Run / EvalProblem / EvalSample"),
        "metrics": (-3.3, 4.9, "metrics\npass@k, maj@k, costs"),
        "budget": (-1.1, 4.9, "budget curve\n(one tokenisation)"),
        "selection": (1.1, 4.9, "selection\nstrategy table + CIs"),
        "sim": (3.3, 4.9, "sim pools →\nsimulate (policies)"),
        "report": (-1.1, 2.9, "evaluate → report.md,\nPNGs, JSON"),
        "learn": (2.2, 2.9, "learn: scorer pairs,\ndifficulty targets"),
    },
    "edges": [("records", "runs"), ("traces", "runs"), ("runs", "metrics"), ("runs", "budget"),
              ("runs", "selection"), ("runs", "sim"), ("metrics", "report"), ("budget", "report"),
              ("selection", "report"), ("runs", "learn")],
}


def _box(ax, x: float, y: float, text: str, color: str, width: float = 2.7, height: float = 1.0) -> None:
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                fc=color, ec="#333333", lw=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], label: str = "", rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, lw=0.9, color="#444444",
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=28, shrinkB=28))
    if label:
        ax.text((a[0] + b[0]) / 2 + 0.15, (a[1] + b[1]) / 2, label, fontsize=7, color="#1f4e79")


def layer_summary() -> dict:
    """What the layer picture shows: modules and lines per layer, imports between layers."""
    modules = Counter(layer_of(m) for m in module_files())
    edges = layer_edges(import_graph())
    return {"modules": dict(sorted(modules.items())), "edges": {f"{a}->{b}": n for (a, b), n in edges.items()}}


def draw_layers(path: Path, summary: dict) -> None:
    """The layers as a stack (lowest at the bottom); each import edge between two layers is an arc on the
    left, labelled with its count."""
    fig, ax = plt.subplots(figsize=(9.5, 8.2))
    colors = {"runtime": "#d9ead3", "offline": "#cfe2f3", "sim": "#fff2cc", "learn": "#f4cccc",
              "app": "#e6e6e6"}
    stack = list(LAYERS)
    y = {layer: 1.75 * k for k, layer in enumerate(stack)}
    width, height = 4.6, 1.3
    for layer in stack:
        _box(ax, 0.0, y[layer], f"{layer}  ({summary['modules'].get(layer, 0)} modules)\n{LAYER_TEXT[layer]}",
             colors[layer], width=width, height=height)
    for key, n in summary["edges"].items():
        a, b = key.split("->")
        span = stack.index(a) - stack.index(b)
        start, end = (-width / 2, y[a] - 0.25), (-width / 2, y[b] + 0.25)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, lw=0.9, color="#444444",
                                     connectionstyle=f"arc3,rad={0.22 + 0.08 * span}"))
        ax.text(-width / 2 - 0.45 - 0.42 * span, (y[a] + y[b]) / 2, str(n), fontsize=8, color="#1f4e79",
                ha="center", va="center")
    ax.set_xlim(-5.6, 6.6)
    ax.set_ylim(-1.0, y["app"] + 1.0)
    ax.axis("off")
    ax.set_title("kit layers, read from the code's imports: every arrow points down (importer → imported; "
                 "label: imports)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_flow(path: Path, flow: dict, title: str) -> None:
    fig, ax = plt.subplots(figsize=(9.5, 6.8))
    nodes = flow["nodes"]
    for x, y, text in nodes.values():
        _box(ax, x, y, text, "#f3f3f3", width=2.9, height=1.05)
    for a, b in flow["edges"]:
        _arrow(ax, nodes[a][:2], nodes[b][:2])
    xs = [x for x, _, _ in nodes.values()]
    ys = [y for _, y, _ in nodes.values()]
    ax.set_xlim(min(xs) - 1.8, max(xs) + 1.8)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = layer_summary()
    draw_layers(args.out / "architecture_layers.png", summary)
    draw_flow(args.out / "flow_predict.png", PREDICT_FLOW, "one predict call (runtime layer)")
    draw_flow(args.out / "flow_offline.png", OFFLINE_FLOW, "an offline evaluation (offline, sim, learn layers)")
    (args.out / "architecture.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
