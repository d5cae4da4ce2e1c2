"""runwasm.shim."""
