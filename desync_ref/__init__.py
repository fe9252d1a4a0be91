"""desync_ref: a reference implementation of casync's formats and of the desync tool.

Layers (each imports only from those below): ``formats`` → ``kernels`` → ``stores`` →
``operations`` → ``cli``. The format pages live in ``spec/``.
"""

__version__ = "0.1.0"
