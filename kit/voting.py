"""Compatibility alias: this module lives at :mod:`kit.runtime.voting` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.voting is kit.runtime.voting``).
"""

import sys

import kit.runtime.voting as _moved

sys.modules[__name__] = _moved
