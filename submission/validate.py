"""Check kernel/dataset metadata against Kaggle's rules and print the exact upload commands."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from submission import SubmissionError

# Kaggle: owner = user/organisation slug; dataset slug 3-50 chars; dataset title 6-50 chars
# (kaggle-api wiki "Dataset Metadata"); kernel title >= 5 chars and its slug is the title lowercased with
# dashes (wiki "Kernel Metadata"; kaggle-api refuses shorter titles).
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def slugify(title: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", title.lower())).strip("-")


def _check_id(value: object, where: str, min_len: int = 3, max_len: int = 50) -> str:
    if not isinstance(value, str) or value.count("/") != 1:
        raise SubmissionError(f"{where}: id must be 'owner/slug', got {value!r}")
    owner, slug = value.split("/")
    if not OWNER.match(owner):
        raise SubmissionError(f"{where}: owner {owner!r} in {value!r} must be letters, digits, '-' or '_'")
    if not SLUG.match(slug):
        raise SubmissionError(f"{where}: slug {slug!r} in {value!r} must be lowercase letters, digits and "
                              f"dashes, not starting or ending with a dash")
    if not min_len <= len(slug) <= max_len:
        raise SubmissionError(f"{where}: slug {slug!r} must be {min_len}-{max_len} characters, has {len(slug)}")
    return value


def _load(path: Path) -> dict:
    if not path.is_file():
        raise SubmissionError(f"{path}: not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: expected a JSON object")
    return data


def check_dataset_metadata(meta: dict, path: Path) -> None:
    _check_id(meta.get("id"), f"{path} field 'id'")
    title = meta.get("title")
    if not isinstance(title, str) or not 6 <= len(title) <= 50:
        raise SubmissionError(f"{path} field 'title': must be 6-50 characters, got {title!r}")
    lic = meta.get("licenses")
    if not (isinstance(lic, list) and len(lic) == 1 and isinstance(lic[0], dict) and lic[0].get("name")):
        raise SubmissionError(f"{path} field 'licenses': must be exactly one entry like [{{\"name\": \"other\"}}]")


def check_kernel_metadata(meta: dict, path: Path, competition: str | None = None,
                          datasets: dict[str, Path] | None = None) -> None:
    """Raise :class:`SubmissionError` naming the file and field on the first problem."""
    kid = _check_id(meta.get("id"), f"{path} field 'id'", min_len=5)
    title = meta.get("title")
    if not isinstance(title, str) or not 5 <= len(title) <= 50:
        raise SubmissionError(f"{path} field 'title': must be 5-50 characters, got {title!r}")
    if slugify(title) != kid.split("/")[1]:
        raise SubmissionError(f"{path} field 'id': slug {kid.split('/')[1]!r} must be the title as a slug "
                              f"({slugify(title)!r}); Kaggle links kernel slug and title")
    expect = {"code_file": "notebook.ipynb", "language": "python", "kernel_type": "notebook",
              "enable_internet": False, "enable_gpu": True}
    for key, want in expect.items():
        if meta.get(key) != want:
            raise SubmissionError(f"{path} field {key!r}: must be {json.dumps(want)} for an AIMO submission, "
                                  f"got {json.dumps(meta.get(key))}")
    if not (path.parent / meta["code_file"]).is_file():
        raise SubmissionError(f"{path} field 'code_file': {path.parent / meta['code_file']} does not exist")
    comps = meta.get("competition_sources")
    if competition is not None and comps != [competition]:
        raise SubmissionError(f"{path} field 'competition_sources': must be [{competition!r}] (the profile's "
                              f"competition), got {comps!r}")
    for i, ds in enumerate(meta.get("dataset_sources") or []):
        _check_id(ds, f"{path} field 'dataset_sources[{i}]'")
        if datasets is not None and ds not in datasets:
            known = ", ".join(sorted(datasets)) or "none"
            raise SubmissionError(f"{path} field 'dataset_sources[{i}]': {ds!r} is not a built dataset "
                                  f"(built: {known}); build it with `python -m submission wheels`/`model`/`encodings` "
                                  f"or drop it from the config")


def find_datasets(dist: Path) -> dict[str, Path]:
    """Built datasets under ``dist``: id -> folder (any folder holding a dataset-metadata.json)."""
    found: dict[str, Path] = {}
    for meta_path in sorted(dist.glob("*/dataset-metadata.json")):
        meta = _load(meta_path)
        check_dataset_metadata(meta, meta_path)
        found[meta["id"]] = meta_path.parent
    return found


def upload_commands(dist: Path, competition: str | None = None, new_datasets: bool = False,
                    message: str = "aimo-kit update") -> list[list[str]]:
    """Validate ``dist``'s metadata and return the kaggle CLI commands, datasets first then the kernel."""
    datasets = find_datasets(dist)
    kmeta_path = dist / "kernel-metadata.json"
    kmeta = _load(kmeta_path)
    check_kernel_metadata(kmeta, kmeta_path, competition, datasets)
    cmds: list[list[str]] = []
    for ds in kmeta.get("dataset_sources") or []:
        folder = str(datasets[ds])
        if new_datasets:
            cmds.append(["kaggle", "datasets", "create", "-p", folder, "--dir-mode", "zip"])
        else:
            cmds.append(["kaggle", "datasets", "version", "-p", folder, "-m", message, "--dir-mode", "zip"])
    cmds.append(["kaggle", "kernels", "push", "-p", str(dist)])
    return cmds


def upload(dist: Path, competition: str | None, dry_run: bool, new_datasets: bool, message: str) -> int:
    cmds = upload_commands(dist, competition, new_datasets, message)
    for cmd in cmds:
        print(("" if dry_run else "+ ") + shlex.join(cmd), flush=True)
        if not dry_run:
            rc = subprocess.run(cmd).returncode
            if rc != 0:
                print(f"error: {cmd[0]} exited {rc}")
                return rc
    return 0
