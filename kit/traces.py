"""Compatibility alias: this module lives at :mod:`kit.offline.traces` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.traces is kit.offline.traces``).
"""

import sys

import kit.offline.traces as _moved

sys.modules[__name__] = _moved
