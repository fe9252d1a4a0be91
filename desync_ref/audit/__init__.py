"""Auditing tools: ``dump`` (every record of a casync file, with offsets and decoded fields,
as text, JSON or one HTML page; spec/dump.md) and ``diff`` (where two indexes or archives
part, and which known casync/desync difference explains it; spec/diff.md)."""
