"""``python -m desync_ref`` runs the command-line tool."""

from desync_ref.cli import entry

entry()
