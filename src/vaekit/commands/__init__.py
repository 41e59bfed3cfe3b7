"""Sub-commands of the ``vaekit`` CLI, one module each (see :mod:`vaekit.cli`)."""
