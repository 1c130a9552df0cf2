"""``python -m sharedattr``: the same as the ``sharedattr`` command."""

import sys

from .cli import main

sys.exit(main())
