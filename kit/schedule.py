"""Compatibility alias: this module lives at :mod:`kit.runtime.schedule` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.schedule is kit.runtime.schedule``).
"""

import sys

import kit.runtime.schedule as _moved

sys.modules[__name__] = _moved
