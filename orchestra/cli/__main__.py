"""`python -m orchestra.cli`: the `orchestra` console script."""

import sys

from orchestra.cli.main import main

sys.exit(main())
