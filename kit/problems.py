"""Compatibility alias: this module lives at :mod:`kit.runtime.problems` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.problems is kit.runtime.problems``).
"""

import sys

import kit.runtime.problems as _moved

sys.modules[__name__] = _moved
