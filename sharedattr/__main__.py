"""``python -m sharedattr``: the same as the ``sharedattr`` command."""

import sys

from sharedattr.cli import main

sys.exit(main())
