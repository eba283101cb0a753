"""The pipeline stages, one module per command: its ``Config`` and ``run()``."""
