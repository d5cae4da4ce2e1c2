"""Install the user's top-level folders (shim/, wasm/, oci/, linux/) as ``runwasm.*``.

PyPI already has unrelated ``oci`` and ``shim`` distributions, so the folders are mapped under
one import namespace instead of being installed as top-level packages.
"""

from setuptools import find_packages, setup

TOP = ("shim", "wasm", "oci", "linux")
packages = []
for top in TOP:
    packages.append(f"runwasm.{top}")
    packages += [f"runwasm.{p}" for p in find_packages(".", include=[f"{top}.*"])]

setup(packages=packages, package_dir={f"runwasm.{t}": t for t in TOP})
