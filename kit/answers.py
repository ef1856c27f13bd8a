"""Compatibility alias: this module lives at :mod:`kit.runtime.answers` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.answers is kit.runtime.answers``).
"""

import sys

import kit.runtime.answers as _moved

sys.modules[__name__] = _moved
