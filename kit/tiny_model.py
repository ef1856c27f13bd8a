"""Compatibility alias: this module lives at :mod:`kit.runtime.tiny_model` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.tiny_model is kit.runtime.tiny_model``).
"""

import sys

import kit.runtime.tiny_model as _moved

sys.modules[__name__] = _moved
