"""`python -m submission`: notebook build (no outputs, kit embedded), metadata validation, upload/wheels
dry-runs, model packaging, the headless rehearsal without the repo, and the offline-install path."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import nbformat
import polars as pl
import pytest

from submission import SubmissionError
from submission.cli import main
from submission.spec import load_build_config
from submission.validate import check_kernel_metadata, upload_commands

REPO = Path(__file__).resolve().parents[1]
AIMO2 = "ai-mathematical-olympiad-progress-prize-2"


def _build(tmp_path: Path, config: str = "tiny_cpu") -> Path:
    dist = tmp_path / "dist"
    assert main(["build", "--config", config, "--out", str(dist)]) == 0
    return dist


def _kit_tar(nb) -> tarfile.TarFile:
    src = next(c.source for c in nb.cells if "KIT_TGZ_B64 = " in c.source)
    b64 = src.split("KIT_TGZ_B64 = ", 1)[1].split("\n", 1)[0].strip().strip("'\"")
    return tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64)), mode="r:gz")


def test_build_writes_notebook_without_outputs_and_with_embedded_kit(tmp_path: Path) -> None:
    dist = _build(tmp_path)
    nb = nbformat.read(str(dist / "notebook.ipynb"), as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.cells[0].cell_type == "markdown"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    text = "\n".join(c.source for c in code)
    for needle in ("submission:", "kaggle:", "--no-index", "--find-links", "TRITON_PTXAS_PATH",
                   "VLLM_WORKER_MULTIPROC_METHOD", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                   "build_predict(run, engine_factory=engine_factory)", "run_gateway(predict, run)",
                   "metadata.version"):
        assert needle in text, needle
    # the run's clock starts in the first code cell, before the offline install
    assert code[0].source.splitlines()[2] == 'os.environ["AIMO_KIT_RUN_START"] = repr(time.time())'
    names = set(_kit_tar(nb).getnames())
    for must in ("kit/__init__.py", "kit/runtime/kaggle.py", "kit/runtime/solver.py", "kit/runtime/session.py",
                 "kit/runtime/sandbox/worker.py", "kit/runtime/resources/problems/aimo2_reference.csv"):
        assert must in names
    assert not any("__pycache__" in n for n in names)
    assert not any(n.startswith("kit/runtime/resources/traces/") for n in names)  # engine vllm: traces left out
    code_files = [n for n in names if n.endswith(".py")]
    assert all(n == "kit/__init__.py" or n.startswith("kit/runtime/") for n in code_files), \
        sorted(n for n in code_files if not n.startswith("kit/runtime/"))  # the runtime layer only


def test_build_is_reproducible(tmp_path: Path) -> None:
    a = _build(tmp_path / "a") / "notebook.ipynb"
    b = _build(tmp_path / "b") / "notebook.ipynb"
    assert a.read_bytes() == b.read_bytes()


def test_kernel_metadata_fields(tmp_path: Path) -> None:
    dist = _build(tmp_path, "aimo2_l4x4")
    meta = json.loads((dist / "kernel-metadata.json").read_text())
    assert meta["id"] == "aimo-team/aimo-kit-l4x4" and meta["title"] == "aimo-kit l4x4"
    assert meta["code_file"] == "notebook.ipynb" and meta["language"] == "python"
    assert meta["kernel_type"] == "notebook" and meta["is_private"] is True
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False
    assert meta["competition_sources"] == [AIMO2]
    assert meta["dataset_sources"] == ["aimo-team/aimo-kit-wheels", "aimo-team/aimo-model-awq"]
    assert meta["model_sources"] == []
    cfg = load_build_config("aimo2_l4x4")
    assert cfg.submission["model"].startswith("/kaggle/input/") and cfg.submission["preset"] == "l4x4"
    nb_text = (dist / "notebook.ipynb").read_text()
    assert "aimo-kit-wheels" in nb_text and "vllm==0.32.0" in nb_text  # flattened gpu requirements


def _fake_dataset(folder: Path, ds_id: str) -> None:
    folder.mkdir(parents=True)
    (folder / "dataset-metadata.json").write_text(json.dumps(
        {"title": "some dataset", "id": ds_id, "licenses": [{"name": "other"}]}))


def test_upload_dry_run_prints_exact_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dist = _build(tmp_path, "aimo2_l4x4")
    _fake_dataset(dist / "wheels", "aimo-team/aimo-kit-wheels")
    _fake_dataset(dist / "model", "aimo-team/aimo-model-awq")
    capsys.readouterr()
    assert main(["upload", "--dry-run", "--dist", str(dist)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"kaggle datasets version -p {dist / 'wheels'} -m 'aimo-kit update' --dir-mode zip",
        f"kaggle datasets version -p {dist / 'model'} -m 'aimo-kit update' --dir-mode zip",
        f"kaggle kernels push -p {dist}",
    ]
    assert main(["upload", "--dry-run", "--new", "--dist", str(dist)]) == 0
    assert f"kaggle datasets create -p {dist / 'wheels'} --dir-mode zip" in capsys.readouterr().out


@pytest.mark.parametrize(("field", "value", "message"), [
    ("id", "no-slash", "id must be 'owner/slug'"),
    ("id", "aimo-team/Bad_Slug!", "must be lowercase letters"),
    ("title", "abc", "field 'title': must be 5-50"),
    ("title", "another title", "must be the title as a slug"),
    ("enable_internet", True, "field 'enable_internet': must be false"),
    ("enable_gpu", False, "field 'enable_gpu': must be true"),
    ("competition_sources", ["ai-mathematical-olympiad-prize"], "field 'competition_sources': must be"),
    ("dataset_sources", ["aimo-team/not-built"], "'aimo-team/not-built' is not a built dataset"),
])
def test_upload_rejects_bad_kernel_metadata(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            field: str, value: object, message: str) -> None:
    dist = _build(tmp_path)
    path = dist / "kernel-metadata.json"
    meta = json.loads(path.read_text())
    meta[field] = value
    path.write_text(json.dumps(meta))
    assert main(["upload", "--dry-run", "--dist", str(dist)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err, err
    with pytest.raises(SubmissionError, match=r"kernel-metadata\.json"):
        upload_commands(dist, AIMO2)


def test_upload_rejects_bad_dataset_metadata(tmp_path: Path) -> None:
    dist = _build(tmp_path)
    (dist / "wheels").mkdir()
    (dist / "wheels" / "dataset-metadata.json").write_text(json.dumps(
        {"title": "short", "id": "aimo-team/aimo-kit-wheels", "licenses": [{"name": "other"}]}))
    with pytest.raises(SubmissionError, match=r"wheels/dataset-metadata\.json field 'title': must be 6-50"):
        upload_commands(dist, AIMO2)


def test_competition_follows_profile(tmp_path: Path) -> None:
    dist = _build(tmp_path)
    meta = json.loads((dist / "kernel-metadata.json").read_text())
    check_kernel_metadata(meta, dist / "kernel-metadata.json", AIMO2, {})
    with pytest.raises(SubmissionError, match="competition_sources"):
        check_kernel_metadata(meta, dist / "kernel-metadata.json", "ai-mathematical-olympiad-progress-prize-3", {})


def test_wheels_dry_run_prints_pip_command(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "wh"
    assert main(["wheels", "--requirements", str(REPO / "requirements/gpu.txt"), "--out", str(out),
                 "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == (f"{sys.executable} -m pip download -r {REPO / 'requirements/gpu.txt'} -d {out} "
                    f"--only-binary :all: --platform manylinux2014_x86_64 --python-version 3.11")
    assert not out.exists()


def test_model_packaging_validates_and_writes_metadata(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x")
    out = tmp_path / "dist" / "model"
    assert main(["model", "--path", str(model), "--out", str(out), "--id", "aimo-team/my-model"]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    (model / "tokenizer.json").write_text("{}")
    assert main(["model", "--path", str(model), "--out", str(out), "--id", "aimo-team/my-model"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "dataset-metadata.json",
                                                     "model.safetensors", "tokenizer.json"]
    assert json.loads((out / "dataset-metadata.json").read_text())["id"] == "aimo-team/my-model"
    assert main(["model", "--path", str(model), "--out", str(out), "--id", "Bad/ID"]) == 2


@pytest.mark.slow
def test_rehearsal_runs_notebook_without_repo(tmp_path: Path) -> None:
    """The rehearsal: only the notebook in a temp folder, network off, tiny model, local gateway."""
    dist, out = tmp_path / "dist", tmp_path / "rehearsal"
    proc = subprocess.run([sys.executable, "-m", "submission", "rehearse", "--config", "tiny_cpu",
                           "--dist", str(dist), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "rehearsal.json").read_text())
    assert report["ok"] and report["exit_code"] == 0 and report["kit_from_workdir"]
    assert report["n_answered"] == report["n_expected"] == 10 and not report["missing_ids"]
    assert report["calls_over_deadline"] == 0 and report["gateway_violations"] == []
    sub = pl.read_parquet(out / "submission.parquet")
    ref = pl.read_csv(REPO / "kit/runtime/resources/problems/aimo2_reference.csv")
    assert sorted(sub["id"].to_list()) == sorted(ref["id"].to_list())
    answers = dict(zip(sub["id"].to_list(), sub["answer"].to_list(), strict=True))
    assert {str(r["id"]): r["answer"] for r in report["per_call"]} == answers  # notebook -> gateway -> parquet
    executed = nbformat.read(str(out / "executed.ipynb"), as_version=4)
    assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))


AIMO3_SERVER = (
    "import polars as pl\n"
    "class AIMO3InferenceServer:\n"
    "    # stands in for Kaggle's: one-row DataFrames (id, problem) to predict, answers to the parquet\n"
    "    def __init__(self, predict):\n"
    "        self.predict = predict\n"
    "    def run_local_gateway(self, paths):\n"
    "        df = pl.read_csv(paths[0])\n"
    "        out = [self.predict(row) for row in df.iter_slices(n_rows=1)]\n"
    "        pl.concat(out).write_parquet('submission.parquet')\n"
    "    def serve(self):\n"
    "        raise SystemExit('not a rerun')\n"
)


@pytest.mark.slow
def test_aimo3_build_and_rehearsal_on_the_competitions_gateway(tmp_path: Path, monkeypatch) -> None:
    """The AIMO3 notebook: encodings dataset and TIKTOKEN_ENCODINGS_BASE, the gpt-oss stack; rehearsed with
    the tiny gpt-oss model, network off, through the competition's gateway found in $AIMO_COMPETITION_DIR."""
    dist = tmp_path / "h100"
    assert main(["build", "--config", "aimo3_h100", "--out", str(dist)]) == 0
    nb = nbformat.read(str(dist / "notebook.ipynb"), as_version=4)
    code = "\n".join(c.source for c in nb.cells)
    assert code.index("TIKTOKEN_ENCODINGS_BASE") < code.index("KIT_TGZ_B64")  # set before anything tokenises
    assert "'stack': 'gpt-oss'" in code and "'preset': 'h100-gpt-oss'" in code
    meta = json.loads((dist / "kernel-metadata.json").read_text())
    assert "aimo-team/aimo-kit-encodings" in meta["dataset_sources"]
    assert meta["competition_sources"] == ["ai-mathematical-olympiad-progress-prize-3"]
    assert meta["model_sources"] == ["openai/gpt-oss-120b/transformers/default/1"]
    enc = tmp_path / "encodings"
    assert main(["encodings", "--out", str(enc), "--id", "aimo-team/aimo-kit-encodings"]) == 0
    digest = hashlib.sha256((enc / "o200k_base.tiktoken").read_bytes()).hexdigest()
    assert digest.startswith("446a9538cb6c") and (enc / "dataset-metadata.json").is_file()

    comp = tmp_path / "comp"
    (comp / "kaggle_evaluation").mkdir(parents=True)
    (comp / "kaggle_evaluation" / "__init__.py").write_text("")
    (comp / "kaggle_evaluation" / "aimo_3_inference_server.py").write_text(AIMO3_SERVER)
    ref = pl.read_csv(REPO / "kit/runtime/resources/problems/aimo3_reference.csv")
    ref.head(3).select("id", "problem").write_csv(comp / "test.csv")
    monkeypatch.setenv("AIMO_COMPETITION_DIR", str(comp))
    out = tmp_path / "rehearsal"
    proc = subprocess.run([sys.executable, "-m", "submission", "rehearse", "--config", "aimo3_tiny_cpu",
                           "--dist", str(tmp_path / "tiny"), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "rehearsal.json").read_text())
    assert report["ok"] and report["gateway"] == "kaggle" and report["kit_from_workdir"]
    assert report["n_answered"] == report["n_expected"] == 3 and not report["invalid_answers"]
    sub = pl.read_parquet(out / "submission.parquet")
    assert sorted(sub["id"].to_list()) == sorted(ref["id"].head(3).to_list())
    assert all(0 <= a <= 99999 for a in sub["answer"].to_list())


@pytest.mark.slow
def test_offline_wheelhouse_installs_cpu_requirements_into_fresh_venv(tmp_path: Path) -> None:
    """A wheelhouse built for this machine installs requirements/cpu.txt + the kit with --no-index into a
    fresh venv, and the kit's dry-run runs from it (about 3 min with a warm pip cache)."""
    wh, venv, cwd = tmp_path / "wheels", tmp_path / "venv", tmp_path / "run"
    t0 = time.monotonic()
    assert main(["wheels", "--requirements", str(REPO / "requirements/cpu.txt"), "--out", str(wh),
                 "--id", "aimo-team/aimo-kit-wheels-cpu"]) == 0
    assert (wh / "dataset-metadata.json").is_file() and (wh / "requirements.txt").is_file()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wh), str(REPO)], check=True, cwd=tmp_path)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no index or find-links from this machine's pip config
    # --no-compile: byte-compiling all of torch and vLLM up front costs the test a minute; what runs compiles
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-compile", "--no-index", "--find-links", str(wh),
                    "-r", str(wh / "requirements.txt"), "aimo-kit"], check=True, env=env)
    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"],
                   env=env, check=False)
    cwd.mkdir()
    proc = subprocess.run([py, "-m", "kit", "dryrun", "--limit", "2", "--out", str(cwd / "out")],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check = subprocess.run([py, "-c", "import kit, submission; print(kit.__file__)"], capture_output=True,
                           text=True, cwd=cwd, env=env, check=True)
    assert str(venv) in check.stdout  # the installed wheel, not the repo
    summary = json.loads((cwd / "out" / "summary.json").read_text())
    assert len(summary["rows"]) == 2
    print(f"offline wheelhouse path: {time.monotonic() - t0:.0f} s")
    shutil.rmtree(venv, ignore_errors=True)


def test_a_replay_build_embeds_the_replay_engine_and_what_it_imports_only(tmp_path: Path) -> None:
    config = tmp_path / "replay.yaml"
    config.write_text("submission:\n  engine: replay\n  solver:\n    n_samples: 4\nkaggle:\n  requirements: requirements/cpu.txt\n")
    dist = tmp_path / "dist"
    assert main(["build", "--config", str(config), "--out", str(dist)]) == 0
    names = set(_kit_tar(nbformat.read(str(dist / "notebook.ipynb"), as_version=4)).getnames())
    assert {"kit/sim/replay.py", "kit/offline/traces.py"} <= names
    assert any(n.startswith("kit/runtime/resources/traces/skythought_32b_aime24/") for n in names)
    assert not any(n.startswith(("kit/learn/", "kit/offline/evaluate", "kit/sim/simulate")) for n in names)
