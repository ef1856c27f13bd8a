"""Run the built notebook headless from a folder without the repository, network off, and check its output.

The executor (nbclient, kernel ``python3`` = this venv's ipykernel) runs in a subprocess started under
``unshare -n`` (a fresh network namespace with only loopback up: the kernel talks to nbclient over
127.0.0.1) when we may (root, util-linux); otherwise proxies point at an unroutable address and
``network`` in rehearsal.json says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from submission import REPO_ROOT

EXEC_SCRIPT = r'''
import sys, nbformat
from nbclient import NotebookClient
nb_path, timeout = sys.argv[1], int(sys.argv[2])
nb = nbformat.read(nb_path, as_version=4)
client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                        resources={"metadata": {"path": "."}})
try:
    client.execute()
finally:
    nbformat.write(nb, "executed.ipynb")
'''


def default_problems_file(profile: str) -> Path:
    """What the rehearsal's gateway serves: ``$AIMO_COMPETITION_DIR/test.csv`` when that folder holds Kaggle's
    ``kaggle_evaluation/`` (the notebook then runs Kaggle's own local gateway), else the profile's bundled
    reference set (our gateway)."""
    from kit.runtime.gateway import kaggle_test_csv
    from kit.runtime.problems import default_problems, problems_path

    return kaggle_test_csv(os.environ.get("AIMO_COMPETITION_DIR")) or problems_path(default_problems(profile))


def _netns_prefix() -> tuple[list[str], str]:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if os.geteuid() == 0 and unshare and ip:
        probe = subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"], capture_output=True)
        if probe.returncode == 0:
            return [unshare, "-n", "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh"], "unshare -n (loopback only)"
    return [], "proxies set to an unroutable address (no unshare as root here)"


def execute_notebook(nb_path: Path, workdir: Path, env_extra: dict[str, str], timeout: int = 1800,
                     network_off: bool = True) -> tuple[int, float, str, str]:
    """Copy only the notebook into ``workdir`` and execute it there; return (rc, seconds, log, network)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(nb_path, workdir / "notebook.ipynb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "KAGGLE_", "AIMO_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env_extra})
    prefix, network = ([], "on (not isolated)")
    if network_off:
        prefix, network = _netns_prefix()
        if not prefix:
            for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
                env[k] = "http://192.0.2.1:9"  # TEST-NET-1, unroutable
            env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    cmd = [*prefix, sys.executable, "-c", EXEC_SCRIPT, "notebook.ipynb", str(timeout)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    return proc.returncode, time.monotonic() - t0, proc.stdout + proc.stderr, network


def notebook_text_outputs(nb_path: Path) -> str:
    import nbformat

    nb = nbformat.read(str(nb_path), as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif out.get("output_type") == "error":
                parts.append("\n".join(out.get("traceback", [])))
            elif "data" in out:
                parts.append(str(out["data"].get("text/plain", "")))
    return "".join(parts)


def check_submission(parquet: Path, problems: Path, answer_range: tuple[int, int] = (0, 999)) -> dict:
    import polars as pl

    expected = pl.read_csv(problems)
    sub = pl.read_parquet(parquet)
    ids = [str(i) for i in expected["id"].to_list()]
    got_ids = [str(i) for i in sub["id"].to_list()]
    answers = sub["answer"].to_list() if "answer" in sub.columns else []
    lo, hi = answer_range
    bad_types = [a for a in answers if not isinstance(a, int) or isinstance(a, bool) or not lo <= a <= hi]
    report = {
        "n_expected": len(ids), "n_answered": len(got_ids),
        "missing_ids": sorted(set(ids) - set(got_ids)), "extra_ids": sorted(set(got_ids) - set(ids)),
        "duplicate_ids": len(got_ids) != len(set(got_ids)),
        "columns": sub.columns, "answer_dtype": str(sub.schema.get("answer")), "invalid_answers": bad_types,
    }
    if "answer" in expected.columns:
        gold = {str(i): int(a) % 1000 if lo == 0 and hi == 999 else int(a)
                for i, a in zip(expected["id"].to_list(), expected["answer"].to_list(), strict=True)}
        got = dict(zip(got_ids, answers, strict=True))
        report["correct"] = sum(1 for i, g in gold.items() if got.get(i) == g)
        report["score"] = f"{report['correct']}/{len(gold)}"
    report["ok"] = (not report["missing_ids"] and not report["extra_ids"] and not report["duplicate_ids"]
                    and not bad_types and report["answer_dtype"].startswith(("Int", "UInt")))
    return report


def _gateway_report(workdir: Path, records_dir: str) -> dict | None:
    """kit.runtime.kaggle's LocalGateway report (per-call seconds, violations, score), when it wrote one."""
    path = workdir / records_dir / "gateway_report.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def rehearse(nb_path: Path, out_dir: Path, problems: Path | None, profile: str = "aimo2",
             timeout: int = 1800, keep_workdir: bool = False, records_dir: str = "aimo-records") -> dict:
    from kit.runtime.gateway import kaggle_test_csv
    from kit.runtime.profiles import get_profile

    prof = get_profile(profile)
    problems = (problems or default_problems_file(profile)).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="aimo-rehearsal-"))
    env = {"AIMO_TEST_CSV": str(problems)}
    if os.environ.get("AIMO_COMPETITION_DIR"):  # Kaggle's gateway and test.csv, passed through to the notebook
        env["AIMO_COMPETITION_DIR"] = os.environ["AIMO_COMPETITION_DIR"]
    rc, seconds, log, network = execute_notebook(nb_path, workdir, env, timeout)
    (out_dir / "executor.log").write_text(log, encoding="utf-8")
    executed = workdir / "executed.ipynb"
    if executed.is_file():
        shutil.copy2(executed, out_dir / "executed.ipynb")
    report: dict = {"notebook": str(nb_path), "workdir": str(workdir), "problems": str(problems),
                    "gateway": "kaggle" if kaggle_test_csv(env.get("AIMO_COMPETITION_DIR")) else "aimo-kit LocalGateway",
                    "network": network, "exit_code": rc, "total_seconds": round(seconds, 1),
                    "per_call_deadline_seconds": prof.per_call_seconds}
    parquet = workdir / "submission.parquet"
    if parquet.is_file():
        shutil.copy2(parquet, out_dir / "submission.parquet")
        report.update(check_submission(parquet, problems, (prof.answer_min, prof.answer_max)))
        gw = _gateway_report(workdir, records_dir)
        if gw is not None:
            report["per_call"] = [{k: r.get(k) for k in ("id", "answer", "gold", "seconds", "valid", "error")}
                                  for r in gw.get("rows", [])]
            secs = [float(r["seconds"]) for r in gw.get("rows", []) if r.get("seconds") is not None]
            deadline = prof.per_call_seconds
            report["max_call_seconds"] = round(max(secs), 2) if secs else None
            report["calls_over_deadline"] = sum(1 for s in secs[1:] if deadline and s > deadline)
            report["gateway_violations"] = gw.get("violations", [])
            if gw.get("violations"):
                report["ok"] = False
            shutil.copy2(workdir / records_dir / "gateway_report.json", out_dir / "gateway_report.json")
    else:
        report["ok"] = False
        report["error"] = "no submission.parquet written (see executor.log / executed.ipynb)"
    if rc != 0:
        report["ok"] = False
    if executed.is_file():
        text = notebook_text_outputs(executed)
        report["kit_from_workdir"] = "aimo-kit-src-" in text and str(REPO_ROOT / "kit") not in text
    (out_dir / "rehearsal.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    if not keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def print_report(report: dict) -> None:
    status = "OK" if report.get("ok") else "FAILED"
    print(f"[rehearse] {status}: exit {report['exit_code']}, {report['total_seconds']} s, network {report['network']}")
    if "n_expected" in report:
        print(f"[rehearse] answered {report['n_answered']}/{report['n_expected']} ids, answer dtype "
              f"{report['answer_dtype']}, invalid {len(report['invalid_answers'])}, missing {report['missing_ids']}")
    if "score" in report:
        print(f"[rehearse] score {report['score']}")
    if report.get("max_call_seconds") is not None:
        print(f"[rehearse] slowest call {report['max_call_seconds']:.1f} s vs deadline "
              f"{report['per_call_deadline_seconds']} s, over: {report['calls_over_deadline']}")
    if report.get("error"):
        print(f"[rehearse] {report['error']}")
