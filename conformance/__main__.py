"""``python -m conformance --impl CMD``: see ``conformance/cli.py`` and README.md."""

import sys

from conformance.cli import main

sys.exit(main())
