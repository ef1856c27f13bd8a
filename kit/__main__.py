"""``python -m kit <command>``: see ``python -m kit --help``."""

from kit.cli import main

raise SystemExit(main())
