"""Compatibility alias: this module lives at :mod:`kit.runtime.kaggle` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.kaggle is kit.runtime.kaggle``).
"""

import sys

import kit.runtime.kaggle as _moved

sys.modules[__name__] = _moved
