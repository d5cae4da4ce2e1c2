"""Mount plumbing for image layers: new mount API via ctypes, loop devices, overlayfs, rootfs."""
