"""Byte formats: pure functions over bytes and file-like objects, no I/O policy."""
