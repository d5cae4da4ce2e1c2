"""Small modules shared by every shim process (entry points, server, harness); stdlib-only."""
