"""``python -m tsprune.cli``: the command line."""

import sys

from tsprune.cli import main

sys.exit(main())
