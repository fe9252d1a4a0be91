"""FUSE mounts of indexes and archives (spec/mount.md, spec/mount-tree.md)."""
