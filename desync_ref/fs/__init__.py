"""The local file system adapters: walk a tree into catar entries, write entries back as a
tree (``O_NOFOLLOW``, directory file descriptors), ACLs, xattrs, chattr flags, devices.

Spec: ``spec/catar.md`` § "Restoring a tree" and § "Safety". Nothing here parses bytes
of a format; ``formats/`` does that, and nothing in ``formats/`` touches the file system.
"""
