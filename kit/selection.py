"""Compatibility alias: this module lives at :mod:`kit.offline.selection` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.selection is kit.offline.selection``).
"""

import sys

import kit.offline.selection as _moved

sys.modules[__name__] = _moved
