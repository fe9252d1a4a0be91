"""Fuzzing desync_ref: targets, runner, seed corpus and crashes (see README.md here)."""
