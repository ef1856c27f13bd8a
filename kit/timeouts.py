"""Compatibility alias: this module lives at :mod:`kit.runtime.timeouts` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.timeouts is kit.runtime.timeouts``).
"""

import sys

import kit.runtime.timeouts as _moved

sys.modules[__name__] = _moved
