"""Compatibility alias: this module lives at :mod:`kit.sim.replay` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.engines.replay is kit.sim.replay``).
"""

import sys

import kit.sim.replay as _moved

sys.modules[__name__] = _moved
