"""Compatibility alias: this module lives at :mod:`kit.runtime.config` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.config is kit.runtime.config``).
"""

import sys

import kit.runtime.config as _moved

sys.modules[__name__] = _moved
