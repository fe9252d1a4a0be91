"""Operations: what each command does, with no argument parsing (the CLI is thin)."""
