"""Self-test impl: fails every command with a message that names no problem."""

import sys

print("nope", file=sys.stderr)
sys.exit(1)
