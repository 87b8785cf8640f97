"""Ray Job entrypoints."""
