"""Compatibility alias: this module lives at :mod:`kit.runtime.sandbox.pool` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.sandbox.pool is kit.runtime.sandbox.pool``).
"""

import sys

import kit.runtime.sandbox.pool as _moved

sys.modules[__name__] = _moved
