"""Kaggle datasets: a wheelhouse (``pip download``), a model folder and the o200k encoding file (gpt-oss),
each with dataset-metadata.json."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from submission import SubmissionError
from submission.notebook import flatten_requirements

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def dataset_metadata(dataset_id: str, title: str | None = None) -> dict:
    slug = dataset_id.split("/")[-1]
    return {"title": title or slug.replace("-", " ")[:50], "id": dataset_id, "licenses": [{"name": "other"}]}


def write_dataset_metadata(folder: Path, dataset_id: str, title: str | None = None) -> Path:
    from submission.validate import check_dataset_metadata

    meta = dataset_metadata(dataset_id, title)
    check_dataset_metadata(meta, folder / "dataset-metadata.json")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dataset-metadata.json"
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def pip_download_command(requirements: Path, out: Path, platform: str | list[str] | None = None,
                         python_version: str | None = None, python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "pip", "download", "-r", str(requirements), "-d", str(out)]
    if platform:
        cmd += ["--only-binary", ":all:"]
        for plat in [platform] if isinstance(platform, str) else platform:
            cmd += ["--platform", plat]
    if python_version:
        if not platform:
            cmd += ["--only-binary", ":all:"]
        cmd += ["--python-version", python_version]
    return cmd


def build_wheels(requirements: Path, out: Path, dataset_id: str, platform: str | list[str] | None = None,
                 python_version: str | None = None, dry_run: bool = False, title: str | None = None) -> int:
    cmd = pip_download_command(requirements, out, platform, python_version)
    print(shlex.join(cmd))
    if dry_run:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        print(f"error: pip download failed (exit {rc})", file=sys.stderr)
        return rc
    # the flattened requirements travel with the wheels (the notebook embeds its own copy too)
    (out / "requirements.txt").write_text("\n".join(flatten_requirements(requirements)) + "\n", encoding="utf-8")
    write_dataset_metadata(out, dataset_id, title or "aimo-kit wheels")
    n = len(list(out.glob("*.whl"))) + len(list(out.glob("*.tar.gz")))
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"[wheels] {n} distributions, {size / 2**30:.2f} GiB in {out}")
    return 0


def check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise SubmissionError(f"model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise SubmissionError(f"{path}: not a model folder (no config.json)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise SubmissionError(f"{path}: no tokenizer (expected one of {', '.join(TOKENIZER_FILES)})")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise SubmissionError(f"{path}: no weights (*.safetensors or *.bin)")


def package_model(path: Path, out: Path, dataset_id: str, title: str | None = None) -> Path:
    """Copy (hardlink where possible) a model folder into ``out`` with dataset-metadata.json."""
    from submission.validate import check_dataset_metadata

    check_model_folder(path)
    check_dataset_metadata(dataset_metadata(dataset_id, title), out / "dataset-metadata.json")
    out.mkdir(parents=True, exist_ok=True)

    def link_or_copy(src: str, dst: str) -> None:
        if os.path.exists(dst):
            if os.path.samefile(src, dst):
                return
            os.unlink(dst)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    ignore = shutil.ignore_patterns(".git", ".cache", "__pycache__", "dataset-metadata.json")
    shutil.copytree(path, out, copy_function=link_or_copy, ignore=ignore, dirs_exist_ok=True)
    meta = write_dataset_metadata(out, dataset_id, title)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"[model] {path} -> {out} ({size / 2**30:.2f} GiB), {meta.name} id {dataset_id}")
    return out


def package_encodings(out: Path, dataset_id: str, title: str | None = None) -> Path:
    """The ``o200k_base.tiktoken`` file gpt-oss tokenisation needs offline, as a dataset: the notebook points
    ``TIKTOKEN_ENCODINGS_BASE`` at it before anything tokenises (without it openai-harmony and vLLM's
    gpt-oss path try to download it at the first request, which fails with the internet off)."""
    from kit.runtime.protocols.harmony import O200K_FILE, encodings_folder

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(encodings_folder() / O200K_FILE, out / O200K_FILE)
    meta = write_dataset_metadata(out, dataset_id, title or "aimo-kit o200k encoding")
    print(f"[encodings] {out / O200K_FILE} ({(out / O200K_FILE).stat().st_size / 2**20:.1f} MiB), {meta.name} "
          f"id {dataset_id}")
    return out
