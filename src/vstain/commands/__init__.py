"""Sub-commands of the ``vstain`` command line, one module each (see :mod:`vstain.cli`)."""
