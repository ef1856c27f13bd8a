"""Compatibility alias: this module lives at :mod:`kit.offline.evaluate` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.evaluate is kit.offline.evaluate``).
"""

import sys

import kit.offline.evaluate as _moved

sys.modules[__name__] = _moved
