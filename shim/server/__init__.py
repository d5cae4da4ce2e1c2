"""The long-lived node server: every group (pod) of one containerd, each with its own socket, Task
service, events and log (``group.py``, adopted by ``node.py``); shared reaper and zygote."""
