"""The run: a recipe read and checked (``recipe``), its components found (``registry``) and built, its stages
keyed by content (``keys``) and run top to bottom (``pipeline``) into a run folder (``rundir``), with progress on
the terminal (``ui``). Private: plugins import ``harness`` and the modules in ``harness.PUBLIC_MODULES``."""
