"""The long-lived shim server of one pod/group: Task service, events, reaper, zygote."""
