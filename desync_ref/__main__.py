"""``python -m desync_ref`` runs the command-line tool."""

import sys

from desync_ref.cli import main

sys.exit(main())
