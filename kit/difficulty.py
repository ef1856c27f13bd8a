"""Compatibility alias: this module lives at :mod:`kit.learn.difficulty` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.difficulty is kit.learn.difficulty``).
"""

import sys

import kit.learn.difficulty as _moved

sys.modules[__name__] = _moved
