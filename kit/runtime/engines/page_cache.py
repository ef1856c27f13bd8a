"""Read a checkpoint into the OS page cache before vLLM loads it.

Why: on Kaggle the model is a mounted dataset; vLLM's safetensors loader reads it tensor by tensor, a
random-access pattern that is slow on that mount. Reading every file once, sequentially and in parallel,
leaves the bytes in RAM (the H100 box has far more RAM than gpt-oss-120b's ≈65 GB), and the load that follows
is a memory copy. The AIMO3 notebooks did this first (~100 s) and had the engine up in ~130 s
(docs/design.md "AIMO3"); ``EnginePreset.preload_weights`` turns it on.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK_BYTES = 16 << 20


def _read_file(path: Path) -> int:
    total = 0
    with path.open("rb", buffering=0) as fh:
        while True:
            block = fh.read(CHUNK_BYTES)
            if not block:
                return total
            total += len(block)


def read_into_page_cache(model_dir: str | Path, *, threads: int = 8) -> tuple[int, float]:
    """Read every weight file of ``model_dir`` once — its ``*.safetensors``, or ``*.bin`` when it has none
    (vLLM loads those only then); (bytes read, seconds). A missing or unreadable file is skipped: the load
    that follows reports it properly."""
    start = time.perf_counter()
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    total = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for n in pool.map(_read_or_zero, files):
            total += n
    return total, time.perf_counter() - start


def _read_or_zero(path: Path) -> int:
    try:
        return _read_file(path)
    except OSError:
        return 0
