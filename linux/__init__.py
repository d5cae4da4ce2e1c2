"""runwasm.linux."""
