"""Compatibility alias: this module lives at :mod:`kit.runtime.records` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.records is kit.runtime.records``).
"""

import sys

import kit.runtime.records as _moved

sys.modules[__name__] = _moved
