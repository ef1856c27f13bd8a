import sys

from submission.cli import main

sys.exit(main())
