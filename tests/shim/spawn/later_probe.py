"""A module a test zygote imports once idle (``later``); tests/shim/spawn/test_zygote.py checks
whether a workload inherited it."""
