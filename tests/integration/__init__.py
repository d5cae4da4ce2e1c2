"""Integration tests against a private containerd 1.6 daemon (marker ``integration``)."""
