"""Compatibility alias: this module lives at :mod:`kit.runtime.engines.presets` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.engines.presets is kit.runtime.engines.presets``).
"""

import sys

import kit.runtime.engines.presets as _moved

sys.modules[__name__] = _moved
