"""runwasm's containerd snapshotter: committed layers are EROFS files (see ``store``)."""
