"""Conformance suite: ``python conformance/run.py --impl CMD`` (see README.md)."""
