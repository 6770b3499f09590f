"""``python -m dreamstate``: the ``dreamstate`` command."""

import sys

from dreamstate.engine.tools.cli import main

sys.exit(main())
