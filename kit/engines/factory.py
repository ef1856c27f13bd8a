"""Compatibility alias: this module lives at :mod:`kit.runtime.engines.factory` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.engines.factory is kit.runtime.engines.factory``).
"""

import sys

import kit.runtime.engines.factory as _moved

sys.modules[__name__] = _moved
