"""Compatibility alias: this module lives at :mod:`kit.runtime.tokens` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.tokens is kit.runtime.tokens``).
"""

import sys

import kit.runtime.tokens as _moved

sys.modules[__name__] = _moved
