"""``runwasm``: the user's command — the standalone harness that plays containerd's part, and image tools."""
