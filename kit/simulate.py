"""Compatibility alias: this module lives at :mod:`kit.sim.simulate` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.simulate is kit.sim.simulate``).
"""

import sys

import kit.sim.simulate as _moved

sys.modules[__name__] = _moved
