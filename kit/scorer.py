"""Compatibility alias: this module lives at :mod:`kit.learn.scorer` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.scorer is kit.learn.scorer``).
"""

import sys

import kit.learn.scorer as _moved

sys.modules[__name__] = _moved
