"""Compatibility alias: this module lives at :mod:`kit.runtime.solver` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.solver is kit.runtime.solver``).
"""

import sys

import kit.runtime.solver as _moved

sys.modules[__name__] = _moved
