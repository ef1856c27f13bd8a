"""The docs stay true to the code: the architecture picture's numbers, the design facts the code cites,
and no reference to a file outside the repository."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITATION = re.compile(r'docs/design\.md\s+\\?"([^"\\]+)\\?"')


def _draw_module():
    spec = importlib.util.spec_from_file_location("draw_architecture", REPO / "scripts" / "draw_architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_architecture_pictures_are_current(tmp_path: Path) -> None:
    draw = _draw_module()
    committed = json.loads((REPO / "docs" / "img" / "architecture.json").read_text())
    now = draw.layer_summary()
    assert now["modules"] == committed["modules"] and set(now["edges"]) == set(committed["edges"]), \
        "the layers changed: run python scripts/draw_architecture.py"
    assert draw.main(["--out", str(tmp_path)]) == 0
    for name in ("architecture_layers.png", "flow_predict.png", "flow_offline.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
        assert (REPO / "docs" / "img" / name).is_file() and f"img/{name}" in (REPO / "docs/architecture.md").read_text()


def _sources() -> list[Path]:
    return [p for pattern in ("kit/**/*.py", "training/**/*.py", "training/**/*.yaml", "submission/**/*.py",
                              "bench/*.py", "tests/*.py", "docs/*.md", "README.md")
            for p in REPO.glob(pattern)]


def test_every_design_citation_names_a_section_of_design_md() -> None:
    headings = {line[3:].strip() for line in (REPO / "docs/design.md").read_text().splitlines() if line.startswith("## ")}
    cited = {(p.relative_to(REPO).as_posix(), m.group(1)) for p in _sources() for m in CITATION.finditer(p.read_text())}
    assert len(cited) >= 10
    missing = sorted((f, s) for f, s in cited if s not in headings)
    assert not missing, missing


def test_no_code_or_doc_points_at_a_design_file_outside_the_repository() -> None:
    offenders = [p.relative_to(REPO).as_posix() for p in _sources()
                 if p.name != "test_docs.py" and re.search(r"DESIGN\.md|\.\./shared/DESIGN", p.read_text())]
    assert offenders == []


def test_every_kit_name_the_docs_mention_exists() -> None:
    import importlib

    bad = []
    for p in [*(REPO / "docs").glob("*.md"), REPO / "README.md"]:
        for name in sorted(set(re.findall(r"\bkit(?:\.[A-Za-z_]\w*)+", p.read_text()))):
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:k]))
                except ImportError:
                    continue
                try:
                    for attr in parts[k:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    bad.append((p.name, name))
                break
    assert not bad, bad
