"""Compatibility alias: this module lives at :mod:`kit.learn.data` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.data is kit.learn.data``).
"""

import sys

import kit.learn.data as _moved

sys.modules[__name__] = _moved
