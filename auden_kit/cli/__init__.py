"""The ``auden-kit`` command line: one module per command group."""
