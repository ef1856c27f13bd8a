"""Compatibility alias: this module lives at :mod:`kit.runtime.sandbox.worker` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.sandbox.worker is kit.runtime.sandbox.worker``).
"""

import sys

import kit.runtime.sandbox.worker as _moved

sys.modules[__name__] = _moved
