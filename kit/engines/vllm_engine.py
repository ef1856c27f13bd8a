"""Compatibility alias: this module lives at :mod:`kit.runtime.engines.vllm_engine` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.engines.vllm_engine is kit.runtime.engines.vllm_engine``).
"""

import sys

import kit.runtime.engines.vllm_engine as _moved

sys.modules[__name__] = _moved
