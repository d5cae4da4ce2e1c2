"""runwasm.oci: OCI image data, the local image store, EROFS layers and rootfs mounts.

Imports nothing from ``runwasm.shim``, ``runwasm.wasm`` or ``runwasm.linux``; importing this
package (or ``image``, ``mediatypes``, ``pack``) is cheap (no ``zstandard``).

How it fits with containerd: under containerd the shim takes the rootfs from
``CreateTaskRequest.rootfs`` (containerd's snapshotter, possibly its own EROFS snapshotter,
already mounted it) and never touches this store. The store (``<root>`` =
``/var/lib/runwasm`` or ``$RUNWASM_ROOT``) serves the standalone harness and ``runwasm image``:
``layout_import`` fills it, ``mounts.rootfs.prepare_rootfs`` builds a container rootfs from it,
and ``wasm_module.module_bytes`` reads a Wasm module straight from layer blobs.

Layout of ``<root>``: ``content/blobs/sha256/`` (blobs), ``content/ingest/`` (in-flight writes),
``images/`` (name records), ``layers/<diff id>/`` (``layer.erofs`` or ``fs/``), ``c/<id>/``
(per-container mountpoints, upper, work), ``mounts/<id>.json`` (mount tables), ``lock``.

Modules: errors, mediatypes, digest, jsonparse, image, reference, platforms, layout, pack,
store, images, resolve, layout_import, gc, compression, layers, convert, verity, wasm_module,
image_cli; erofs/ (format, builder, from_tar, from_dir, reader); mounts/ (syscalls,
capabilities, extract, table, rootfs). ``control`` and ``runtime_spec`` belong to the shim side.
"""
