"""Conformance suite for desync-syntax tools: ``python -m conformance --impl CMD``.

Needs only Python and ``zstandard`` (never ``desync_ref``): ``framework`` (commands,
checks, JUnit), ``oracle`` (what outputs are compared against), ``inputs`` (the case
blobs), one ``*_cases`` module per family, ``suite`` (plan and run), ``cli``. See
README.md.
"""
