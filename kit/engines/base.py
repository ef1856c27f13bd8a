"""Compatibility alias: this module lives at :mod:`kit.runtime.engines.base` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.engines.base is kit.runtime.engines.base``).
"""

import sys

import kit.runtime.engines.base as _moved

sys.modules[__name__] = _moved
