"""``python -m uotisp_lib.cli`` is the ``uotisp`` command."""

import sys

from uotisp_lib.cli import main

sys.exit(main())
