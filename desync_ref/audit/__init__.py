"""Auditing tools: dump, diff (spec/dump.md, spec/diff.md)."""
