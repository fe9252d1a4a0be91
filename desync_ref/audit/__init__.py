"""Auditing tools: ``dump`` (every record of a casync file, with offsets and decoded fields,
as text, JSON or one HTML page). Spec: ``spec/dump.md``."""
