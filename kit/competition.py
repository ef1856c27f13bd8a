"""Compatibility alias: this module lives at :mod:`kit.runtime.profiles` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.competition is kit.runtime.profiles``).
"""

import sys

import kit.runtime.profiles as _moved

sys.modules[__name__] = _moved
