"""desync_ref: a reference implementation of casync's formats and of the desync tool.

Layers (each imports only from those below): ``formats`` (bytes only) → ``kernels``
(mypyc-compiled loops) → ``stores`` and ``fs`` (the local file system) → ``operations``
(what each command does) → ``server`` → ``cli`` (flags, messages, exit codes). The format
pages live in ``spec/``; ``spec/README.md`` maps each module to its page.
"""

__version__ = "0.1.0"
