"""runwasm.oci."""
