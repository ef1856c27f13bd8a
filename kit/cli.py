"""Command-line entry points of the kit (``python -m kit ...``).

Errors the user can fix (a missing file, an unknown profile) are printed as one line and exit code 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kit.competition import DEFAULT_PROFILE, PROFILES


def _add_dryrun(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dryrun",
        help="replay recorded samples through the answer pipeline (extraction, voting, early stop)",
        description=(
            "Runs the kit's answer pipeline on recorded model outputs: for each problem the samples are "
            "read in order, answers extracted and normalised for the competition profile, votes counted "
            "with the early-stop rules, and the selected answer scored against the gold answer."
        ),
    )
    p.add_argument("--pool", default="skythought_aime24",
                   help="bundled trace pool name or a folder/file of trace jsonl (default: %(default)s)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help="competition profile (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for records.jsonl and summary.json (default: runs/dryrun-<time>)")
    p.add_argument("--no-early-stop", action="store_true", help="vote over every sample")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kit", description="aimo-kit command line")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dryrun(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "dryrun":
            from kit.replay_run import run_replay

            summary = run_replay(args.pool, profile=args.profile, out_dir=args.out,
                                 early_stop=not args.no_early_stop)
            return 0 if summary["problems"] else 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1
