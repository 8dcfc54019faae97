"""The ``selfsup`` command line."""
