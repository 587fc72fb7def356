"""The ``sovnet`` command-line interface."""
