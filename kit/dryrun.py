"""Compatibility alias: this module lives at :mod:`kit.runtime.dryrun` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.dryrun is kit.runtime.dryrun``).
"""

import sys

import kit.runtime.dryrun as _moved

sys.modules[__name__] = _moved
