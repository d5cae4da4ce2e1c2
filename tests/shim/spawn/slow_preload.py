"""A module that takes 0.5 s to import: keeps a test zygote busy with its preload while the
test's spawn request arrives (tests/shim/spawn/test_zygote.py)."""

import time

time.sleep(0.5)
