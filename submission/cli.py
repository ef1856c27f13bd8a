"""``python -m submission build|wheels|model|upload|rehearse``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from submission import REPO_ROOT, SubmissionError


def _build(args: argparse.Namespace) -> int:
    from submission.notebook import build_notebook
    from submission.spec import load_build_config

    cfg = load_build_config(args.config)
    nb, meta = build_notebook(cfg, args.out)
    print(f"[build] {nb} ({nb.stat().st_size / 1024:.0f} KB), {meta}")
    print(f"[build] kernel {cfg.kaggle.kernel_id}, competition {cfg.competition}, "
          f"datasets {cfg.kaggle.dataset_sources or 'none'}, model {cfg.submission.get('model') or 'tiny'}")
    return 0


def _wheels(args: argparse.Namespace) -> int:
    from submission.datasets import build_wheels

    return build_wheels(args.requirements, args.out, args.id, args.platform, args.python_version,
                        dry_run=args.dry_run, title=args.title)


def _model(args: argparse.Namespace) -> int:
    from submission.datasets import package_model

    package_model(args.path, args.out, args.id, args.title)
    return 0


def _encodings(args: argparse.Namespace) -> int:
    from submission.datasets import package_encodings

    package_encodings(args.out, args.id, args.title)
    return 0


def _upload(args: argparse.Namespace) -> int:
    from submission.validate import upload

    competition = args.competition
    if competition is None:
        if args.config is not None:
            from submission.spec import load_build_config

            competition = load_build_config(args.config).competition
        else:
            from kit.runtime.profiles import get_profile

            competition = get_profile(args.profile).competition_slug
    return upload(args.dist, competition, args.dry_run, args.new, args.message)


def _rehearse(args: argparse.Namespace) -> int:
    from submission.notebook import build_notebook
    from submission.rehearse import print_report, rehearse
    from submission.spec import load_build_config

    cfg = load_build_config(args.config)
    nb = args.dist / "notebook.ipynb"
    if args.rebuild or not nb.is_file() or nb.stat().st_mtime < cfg.path.stat().st_mtime:
        nb, _ = build_notebook(cfg, args.dist)
        print(f"[rehearse] built {nb}")
    report = rehearse(nb, args.out, args.problems, cfg.profile, args.timeout, args.keep,
                      str(cfg.submission.get("records_dir", "aimo-records")))
    print_report(report)
    print(f"[rehearse] {args.out / 'rehearsal.json'}")
    return 0 if report.get("ok") else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m submission", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="write dist/notebook.ipynb and dist/kernel-metadata.json")
    b.add_argument("--config", required=True, help="submission/configs/<name>.yaml (or just <name>)")
    b.add_argument("--out", type=Path, default=Path("dist"))
    b.set_defaults(func=_build)

    w = sub.add_parser("wheels", help="pip download a wheelhouse dataset (+ dataset-metadata.json)")
    w.add_argument("--requirements", type=Path, default=REPO_ROOT / "requirements" / "gpu.txt")
    w.add_argument("--out", type=Path, default=Path("dist/wheels"))
    w.add_argument("--id", default="aimo-team/aimo-kit-wheels", help="dataset id owner/slug")
    w.add_argument("--title", default=None)
    w.add_argument("--platform", action="append", default=None,
                   help="target platform tag, repeatable, e.g. manylinux_2_35_x86_64 (Kaggle's glibc; pip also "
                        "accepts older manylinux wheels) or manylinux2014_x86_64; implies --only-binary :all:")
    w.add_argument("--python-version", default=None, help="e.g. 3.11")
    w.add_argument("--dry-run", action="store_true", help="print the pip command only")
    w.set_defaults(func=_wheels)

    m = sub.add_parser("model", help="package a model folder as a dataset")
    m.add_argument("--path", type=Path, required=True)
    m.add_argument("--out", type=Path, default=Path("dist/model"))
    m.add_argument("--id", required=True, help="dataset id owner/slug")
    m.add_argument("--title", default=None)
    m.set_defaults(func=_model)

    e = sub.add_parser("encodings", help="the o200k_base.tiktoken file gpt-oss needs offline, as a dataset")
    e.add_argument("--out", type=Path, default=Path("dist/encodings"))
    e.add_argument("--id", default="aimo-team/aimo-kit-encodings", help="dataset id owner/slug")
    e.add_argument("--title", default=None)
    e.set_defaults(func=_encodings)

    u = sub.add_parser("upload", help="validate dist/ metadata and run (or print) the kaggle commands")
    u.add_argument("--dist", type=Path, default=Path("dist"))
    u.add_argument("--dry-run", action="store_true", help="print the commands only")
    u.add_argument("--new", action="store_true", help="'datasets create' instead of 'datasets version'")
    u.add_argument("--message", "-m", default="aimo-kit update", help="dataset version message")
    u.add_argument("--config", default=None, help="build config (its competition is required)")
    u.add_argument("--profile", default="aimo2", help="competition profile when no --config is given")
    u.add_argument("--competition", default=None, help="override the expected competition slug")
    u.set_defaults(func=_upload)

    r = sub.add_parser("rehearse", help="execute the notebook headless without the repo, network off")
    r.add_argument("--config", required=True)
    r.add_argument("--problems", type=Path, default=None,
                   help="CSV (default: $AIMO_COMPETITION_DIR/test.csv with Kaggle's gateway when that folder holds "
                        "kaggle_evaluation/, else the profile's bundled reference set)")
    r.add_argument("--dist", type=Path, default=Path("dist"))
    r.add_argument("--out", type=Path, default=Path("dist/rehearsal"))
    r.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    r.add_argument("--rebuild", action="store_true", help="build even if dist/notebook.ipynb is newer")
    r.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    r.set_defaults(func=_rehearse)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

