"""Compatibility alias: this module lives at :mod:`kit.runtime.engines.memory` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.engines.memory is kit.runtime.engines.memory``).
"""

import sys

import kit.runtime.engines.memory as _moved

sys.modules[__name__] = _moved
