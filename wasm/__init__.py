"""runwasm.wasm."""
