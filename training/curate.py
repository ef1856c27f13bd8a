"""Curate SFT and RL data: ``python -m training.curate --config training/configs/curate.yaml [--key value ...]``.

Writes ``sft.jsonl``, ``rl.jsonl`` and ``drop_report.json`` to the output folder and prints the report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from kit.learn.data import EVAL_SETS, DropReport, curate, load_any, load_eval_sets, write_rl, write_sft
from training.common import cli


@dataclass
class InputConfig:
    path: str
    kind: str = "auto"
    source: str | None = None


@dataclass
class CurateConfig:
    inputs: list[InputConfig] = field(default_factory=list)
    eval_sets: list[str] = field(default_factory=lambda: list(EVAL_SETS))
    extra_eval_sets: list[str] = field(default_factory=list)
    """Paths; missing files are skipped with a warning."""
    min_pass_rate: float = 0.0
    max_pass_rate: float = 0.5
    max_tokens: int = 16384
    dedup_threshold: float = 0.8
    out: str = "runs/curate"


def run(cfg: CurateConfig) -> DropReport:
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = DropReport()
    frames = []
    for inp in cfg.inputs:
        frames.append(load_any(inp.path, inp.kind, inp.source, report))
    extra = [p for p in cfg.extra_eval_sets if Path(p).is_file()]
    for p in set(cfg.extra_eval_sets) - set(extra):
        print(f"curate: eval set {p} not found, skipped", file=sys.stderr)
    evals = load_eval_sets([*cfg.eval_sets, *extra])
    res = curate(frames, eval_sets=evals, report=report, min_pass_rate=cfg.min_pass_rate,
                 max_pass_rate=cfg.max_pass_rate, max_tokens=cfg.max_tokens, dedup_threshold=cfg.dedup_threshold)
    write_sft(res.sft, out_dir / "sft.jsonl")
    write_rl(res.rl, out_dir / "rl.jsonl")
    report.totals["eval_sets"] = len(evals)  # type: ignore[assignment]
    report.write(out_dir / "drop_report.json")
    print(f"curate: sft.jsonl, rl.jsonl and drop_report.json written to {out_dir}")
    return report


def main(argv: list[str] | None = None) -> int:
    return cli("python -m training.curate", __doc__.split("\n\n")[0], CurateConfig, run,
               "training/configs/curate.yaml", argv)


__all__ = ["CurateConfig", "InputConfig", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
