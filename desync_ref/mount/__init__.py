"""FUSE mounts of indexes: ``mount-index`` (one blob, :mod:`desync_ref.mount.blob`, with the
copy-on-read file of :mod:`desync_ref.mount.cor`), the tree of a catar or caidx
(``mount-archive``, and ``mount-index`` of a caidx: :mod:`desync_ref.mount.table` and
:mod:`desync_ref.mount.tree`) and the mount loop with its signals
(:mod:`desync_ref.mount.runner`). fusepy (and the libfuse2 it loads) is needed only here,
and is imported only when a mount starts.

Layer: beside ``server/``, above ``operations/``, below ``cli/``. Spec: spec/mount.md,
spec/mount-tree.md.
"""
