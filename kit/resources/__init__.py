"""Compatibility alias: this module lives at :mod:`kit.runtime.resources` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.resources is kit.runtime.resources``).
"""

import sys

import kit.runtime.resources as _moved

sys.modules[__name__] = _moved
