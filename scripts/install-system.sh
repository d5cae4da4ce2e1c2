#!/usr/bin/env bash
# Debian packages runwasm's tests and demo use: a real containerd 1.6 and runc to compare
# against, busybox-static for OCI test images, erofs-utils (fsck.erofs, dump.erofs) and
# cryptsetup-bin (veritysetup) to cross-check the EROFS and dm-verity writers, libseccomp2 for
# pyseccomp, hyperfine for benchmarks, skopeo and umoci (Debian 12: skopeo 1.9.3, umoci 0.4.7)
# to build OCI image layouts and archives with real third-party tools, so tests/oci checks that
# `runwasm image import` reads what they write and that skopeo reads what `pack-wasm` writes.
# containernetworking-plugins (bridge, loopback, host-local) give the CRI tier's pods a network
# inside the tests' private network namespace (tests/integration/cri).
# docker-registry (distribution 2.8) is the registry the image-signature tests push to and pull from on
# 127.0.0.1 (a private instance per test session, never the packaged service), and the one `make critest`
# serves critest's stand-in images from; iptables for the CNI portmap plugin critest's host-port specs use.
# curl is the HTTP client the wasi:http tests reach served components with (inside their netns).
# gcc and libc6-dev build the shim's native launcher front (scripts/launcher.c), the Wasm task helper
# runwasm-wasm-exec (shim/spawn/wasm_exec.c) and the C fixtures.
# Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(containerd runc busybox-static erofs-utils cryptsetup-bin libseccomp2 hyperfine util-linux iproute2 psmisc
      skopeo umoci containernetworking-plugins docker-registry curl iptables gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "install-system: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"
fi
