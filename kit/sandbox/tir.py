"""Compatibility alias: this module lives at :mod:`kit.runtime.sandbox.tir` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.sandbox.tir is kit.runtime.sandbox.tir``).
"""

import sys

import kit.runtime.sandbox.tir as _moved

sys.modules[__name__] = _moved
