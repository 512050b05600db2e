"""Built-in harness plugins. Each module registers its components through the ``harness`` entry-point group,
exactly as a third-party package would; the core never imports these by name."""
