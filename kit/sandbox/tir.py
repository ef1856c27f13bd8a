"""Compatibility alias: this module lives at :mod:`kit.runtime.protocols.tir` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.sandbox.tir is kit.runtime.protocols.tir``).
"""

import sys

import kit.runtime.protocols.tir as _moved

sys.modules[__name__] = _moved
