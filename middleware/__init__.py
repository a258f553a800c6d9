"""Built-in middleware for strands-trio, imported as ``strands_trio.middleware``.

This folder is installed as the ``strands_trio.middleware`` subpackage (see ``package-dir`` in
``pyproject.toml``); nothing installs a top-level ``middleware`` module. The middleware stack
itself and the built-in middleware (auth, rate limit, logging, timeout, metrics) come with the
middleware issue; until then this package is empty.
"""

__all__: list[str] = []
