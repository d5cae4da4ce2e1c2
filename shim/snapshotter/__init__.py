"""The ``runwasm snapshotter`` daemon: containerd's Snapshots (and Diff) gRPC services over
``runwasm.oci.snapshotter.store`` (a proxy plugin, like the stargz, nydus and soci snapshotters)."""
